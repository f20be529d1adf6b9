"""``bridge.load`` through the real HF paths: directories, hub names from an offline cache."""

import textwrap

import pytest
import torch

import bridge
from bridge import BridgeError
from bridge.kernel.errors import RemoteCodeRequiredError
from bridge.testing import populate_hub_cache, run_isolated


def test_load_directory_prefers_safetensors_and_matches_hf(gpt2_dir):
    assert (gpt2_dir / "model.safetensors").exists()
    model = bridge.load(gpt2_dir)
    from transformers import GPT2LMHeadModel

    reference = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    tokens = model.to_tokens("the cat sat on the mat")
    torch.testing.assert_close(model(tokens), reference(tokens).logits, atol=1e-4, rtol=0)
    assert model.cfg.architecture == "GPT2LMHeadModel" and model.tokenizer is not None


def test_load_by_hub_name_from_offline_cache(gpt2_dir, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 loads "openai-community/gpt2" from a cache laid out
    as the hub client lays it out."""
    cache = tmp_path / "hub"
    snapshot = populate_hub_cache(gpt2_dir, cache, "openai-community/gpt2")
    assert (snapshot / "config.json").is_symlink()
    script = textwrap.dedent(
        """
        import bridge, torch
        model = bridge.load("openai-community/gpt2")
        logits = model("the cat sat")
        print("OK", tuple(logits.shape), model.cfg.architecture)
        try:
            bridge.load("openai-community/not-there")
        except bridge.BridgeError as err:
            print("ERR", err)
        """
    )
    result = run_isolated(script, None, {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert "OK (1, 5, 128) GPT2LMHeadModel" in result.stdout
    assert "ERR cannot read the config of 'openai-community/not-there'" in result.stdout
    assert "HF_HUB_OFFLINE=1" in result.stdout


def test_remote_code_is_not_run_by_default(gpt2_dir, tmp_path):
    """A repository whose config points at its own code is refused unless trust_remote_code=True."""
    import json
    import shutil

    repo = tmp_path / "remote"
    shutil.copytree(gpt2_dir, repo)
    config = json.loads((repo / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    config["model_type"] = "evil"
    (repo / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (repo / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(RemoteCodeRequiredError) as raised:
        bridge.load(repo)
    assert not marker.exists()
    message = str(raised.value)
    assert message.startswith(f"{str(repo)!r} needs trust_remote_code=True: its config is defined by Python code")
    assert "HF: " in message and "custom code" in message  # HF's own reason follows
    assert isinstance(raised.value, BridgeError) and isinstance(raised.value.__cause__, ValueError)


def test_missing_directory_error_is_readable(tmp_path):
    with pytest.raises(BridgeError, match="no model directory at"):
        bridge.load(tmp_path / "nope")
    with pytest.raises(BridgeError, match="cannot read the config of 'not-a-model-anywhere'"):
        bridge.load("not-a-model-anywhere")
