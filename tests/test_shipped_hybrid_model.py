"""The shipped attention/Mamba-2 hybrid (examples/models/hybrid-induction) and its demo, checked together.

References are independent of the bridge: the HF model's own logits, ``output_attentions`` and its modules
zeroed by torch hooks. Thresholds have margin over what the model measures on these fixed sequences (repeated-half
loss ≈ 1.0 against ≈ 6.8 on the first copy; attention-layer heads' induction scores 0.53-0.61; zeroing the Mamba-2
or the attention layer's output puts the repeated-half loss back above 6).
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("bridge_mamba", reason="the hybrid demo needs the bridge-mamba plugin")

import bridge
from bridge.app.demo import run_demo
from bridge_mamba.demo import SEGMENT, repeated_loss, repeated_tokens

MODEL = Path(__file__).parents[1] / "examples" / "models" / "hybrid-induction"


@pytest.fixture(scope="module")
def model():
    return bridge.load(MODEL)


@pytest.fixture(scope="module")
def hf_model():
    from transformers import NemotronHForCausalLM

    return NemotronHForCausalLM.from_pretrained(MODEL, attn_implementation="eager").eval()


def test_tokenizer_has_distinct_bos_eos_and_padding(model):
    tokenizer = model.tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert model.to_str_tokens("t5 t17 t3", prepend_bos=True) == ["<bos>", "t5", "t17", "t3"]


def test_logits_and_patterns_are_hfs_and_the_layer_kinds_its_config(model, hf_model):
    tokens = repeated_tokens(model, seed=99)[:4]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    with torch.no_grad():
        out = hf_model(tokens, output_attentions=True, use_cache=False)
    torch.testing.assert_close(model(tokens), out.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], out.attentions[0], atol=1e-5, rtol=0)
    assert model.cfg.layer_types == ["mamba2", "attention"]
    assert hf_model.config.layer_types == ["linear_attention", "full_attention"]


def test_the_model_does_induction_and_needs_both_layer_kinds(model, hf_model):
    """Zeroing a layer's output through the bridge's hook equals zeroing the HF module's output (a torch hook)."""
    tokens = repeated_tokens(model, seed=99)
    base = repeated_loss(model, tokens)
    per_token = model(tokens, return_type="loss", loss_per_token=True)
    first = per_token[:, 1 : SEGMENT - 1].mean().item()
    assert base < 1.5 < 6.0 < first
    for layer, write, module in ((0, "hook_mixer_out", "mixer"), (1, "hook_attn_out", "mixer")):
        hooked = repeated_loss(model, tokens, [(f"blocks.{layer}.{write}", lambda t, hook: torch.zeros_like(t))])

        def zero(_module, _args, output):
            return (torch.zeros_like(output[0]), *output[1:]) if isinstance(output, tuple) else torch.zeros_like(output)

        handle = getattr(hf_model.model.layers[layer], module).register_forward_hook(zero)
        try:
            with torch.no_grad():
                logits = hf_model(tokens, use_cache=False).logits
        finally:
            handle.remove()
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        assert abs(losses[:, -(SEGMENT - 1) :].mean().item() - hooked) < 1e-4
        assert hooked > 5.0, (layer, hooked)


def test_demo_finds_induction_in_the_attention_layer_fed_by_the_mamba_layer(tmp_path):
    lines: list[str] = []
    result = run_demo(MODEL, png=None, out=lines.append)
    assert result["layer_types"] == ["mamba2", "attention"]
    assert result["induction_layer_kind"] == "attention" and result["induction_head"][0] == 1
    assert result["induction_score"] > 0.45
    assert result["loss"] < 1.5 and result["loss_ablated"] > result["loss"]
    assert result["layer_ablation_losses"][0] > 5.0 and result["layer_ablation_losses"][1] > 5.0
    text = "\n".join(lines)
    assert "Induction is carried by attention" in text and "Block 0 (mamba2) feeds it" in text
