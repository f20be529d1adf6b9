"""``bridge.load`` with only bridge-core and bridge-llama: by hub name from an offline HF cache, by directory,
and a readable error for another family's model. Fresh processes, so the plugin set is what the env says."""

import subprocess

import pytest
from transformers import GPT2Config

from bridge.testing import examples_of, populate_hub_cache, run_isolated, save_tiny_model
from bridge_llama import LlamaAdapter


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(examples_of(LlamaAdapter).example_config(), tmp_path_factory.mktemp("llama"))


def run_llama_only(script: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter that loads only bridge-llama and never reaches the network."""
    return run_isolated(script, "bridge-llama", {"HF_HOME": str(tmp_path / "hf-home"), **env})


def test_load_hub_name_offline_from_the_hf_cache(llama_dir, tmp_path):
    """``bridge.load("meta-llama/Llama-3.2-1B")`` from a cache laid out as the hub client lays it out, with
    only bridge-llama loaded; the logits equal the HF model's read from the same snapshot."""
    cache = tmp_path / "hub"
    snapshot = populate_hub_cache(llama_dir, cache, "meta-llama/Llama-3.2-1B")
    assert (snapshot / "model.safetensors").is_symlink()
    script = """
        import bridge, torch
        from transformers import LlamaForCausalLM
        model = bridge.load("meta-llama/Llama-3.2-1B")
        print("PLUGINS", sorted(p.distribution for p in bridge.get_registry().plugins if p.status == "loaded"))
        reference = LlamaForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B").eval()
        tokens = model.to_tokens("the cat sat on the mat")
        logits, cache = model.run_with_cache(tokens)
        print("DIFF", (logits - reference(tokens).logits).abs().max().item())
        print("OK", model.cfg.architecture, type(model.adapter).__name__, tuple(cache["pattern", 1].shape))
    """
    result = run_llama_only(script, tmp_path, HF_HUB_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    assert "PLUGINS ['bridge-llama']" in result.stdout
    diff = float(result.stdout.split("DIFF ")[1].split()[0])
    assert diff <= 1e-4
    assert "OK LlamaForCausalLM LlamaAdapter (1, 4, " in result.stdout


def test_load_directory_and_gpt2_error_names_its_plugin(llama_dir, tmp_path):
    gpt2_dir = save_tiny_model(
        GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=128, architectures=["GPT2LMHeadModel"]),
        tmp_path / "gpt2",
    )
    script = f"""
        import bridge
        model = bridge.load({str(llama_dir)!r})
        print("OK", type(model.adapter).__name__, model.cfg.n_key_value_heads)
        try:
            bridge.load({str(gpt2_dir)!r})
        except bridge.UnknownArchitectureError as err:
            print("ERR", err)
    """
    result = run_llama_only(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK LlamaAdapter 2" in result.stdout
    error = result.stdout.split("ERR ", 1)[1]
    assert "GPT2LMHeadModel" in error and "pip install bridge-gpt2" in error
    assert "bridge-llama" in error  # the installed plugins are listed
