"""Core's MoE component beyond Mixtral: a shared expert with a sigmoid gate (``shared_expert=``,
``shared_expert_gate=``), the top-k-then-softmax routing rule, and routing recomputed in the router's dtype.

Written against a Qwen2-MoE adapter built here from core components only, and HF's own modules as references."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
import transformers
from transformers.models.granitemoe.modeling_granitemoe import GraniteMoeTopKRouter

import bridge
from bridge import Adapter, BlockSpec, ComponentMap, Examples, Spec
from bridge.kernel.components import Attention, Norm, SequentialBlock, SplitQKV
from bridge.kernel.components.moe import MoE, softmax_then_topk, topk_then_softmax
from bridge.kernel.config import BridgeConfig
from bridge.testing import save_tiny_model


class SharedExpertMoEAdapter(Adapter):
    """Qwen2-MoE, every layer sparse, from core components: routed experts plus a sigmoid-gated shared expert."""

    architectures: ClassVar[tuple[str, ...]] = ("Qwen2MoeForCausalLM",)

    def config_overrides(self) -> dict[str, Any]:
        return {"positional_embedding_type": "rotary", "normalization_type": "RMS", "gated_mlp": True}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        moe = {
            "routing": softmax_then_topk(normalize=False),
            "shared_expert": "shared_expert",
            "shared_expert_gate": "shared_expert_gate",
        }
        children = {
            "ln1": Spec(Norm, "input_layernorm", {"kind": "RMS"}),
            "attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}),
            "ln2": Spec(Norm, "post_attention_layernorm", {"kind": "RMS"}),
            "mlp": Spec(MoE, "mlp", moe),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(SequentialBlock, children),
            ln_final=Spec(Norm, "norm", {"kind": "RMS"}),
        )


class SharedExpertMoEExamples(Examples):
    adapter = SharedExpertMoEAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.Qwen2MoeConfig(
            architectures=["Qwen2MoeForCausalLM"],
            vocab_size=128,
            hidden_size=32,
            intermediate_size=48,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=24,
            num_experts=4,
            num_experts_per_tok=2,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    return save_tiny_model(SharedExpertMoEExamples.example_config(), tmp_path_factory.mktemp("qwen2moe"))


def close(got, expected, atol=1e-5):
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_topk_softmax_equals_the_hf_granite_router():
    config = transformers.GraniteMoeConfig(hidden_size=16, num_local_experts=6, num_experts_per_tok=3)
    router = GraniteMoeTopKRouter(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        router.weight.copy_(torch.randn(router.weight.shape, generator=generator))
        logits, weights, indices = router(torch.randn(10, 16, generator=generator))
    got_weights, got_indices = topk_then_softmax()(router, logits)
    assert torch.equal(got_indices, indices)
    close(got_weights, weights, atol=1e-7)


def test_shared_expert_hooks_and_the_mlp_out_decomposition(moe_dir):
    """``hook_shared_expert_out`` is HF's gated shared-expert output (torch hooks on the HF modules); with the
    routed slots it sums to ``hook_mlp_out``; its child ``MLP`` has TransformerLens shapes; logits are HF's."""
    model = bridge.load(str(moe_dir), adapter=SharedExpertMoEAdapter)
    model.set_opt_in("hook_expert_outputs", True)
    reference = transformers.Qwen2MoeForCausalLM.from_pretrained(moe_dir).eval()
    tokens = torch.randint(1, 128, (2, 6), generator=torch.Generator().manual_seed(1))
    block = reference.model.layers[0].mlp
    seen: dict[str, torch.Tensor] = {}
    handles = [
        block.shared_expert.register_forward_hook(lambda m, a, out: seen.__setitem__("shared", out)),
        block.shared_expert_gate.register_forward_hook(lambda m, a, out: seen.__setitem__("gate", out)),
    ]
    try:
        with torch.no_grad():
            expected_logits = reference(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    logits, cache = model.run_with_cache(tokens)
    close(logits, expected_logits, atol=1e-4)
    close(cache["blocks.0.mlp.hook_shared_expert_out"].flatten(0, 1), torch.sigmoid(seen["gate"]) * seen["shared"])
    assert cache["blocks.0.mlp.shared_expert.hook_post"].shape == (2, 6, 24)
    routed = cache["blocks.0.mlp.hook_expert_outputs"].sum(-2)
    close(routed + cache["blocks.0.mlp.hook_shared_expert_out"], cache["mlp_out", 0])


def test_recomputed_routing_hands_the_experts_weights_in_the_routers_dtype(moe_dir):
    """Qwen2-MoE's router returns its weights in the logits' dtype (bf16 here); re-running the selection from a
    hooked ``hook_router_logits`` keeps that dtype, so the bf16 logits equal HF's bit for bit."""
    model = bridge.load(str(moe_dir), adapter=SharedExpertMoEAdapter, dtype=torch.bfloat16)
    reference = transformers.Qwen2MoeForCausalLM.from_pretrained(moe_dir, dtype=torch.bfloat16).eval()
    tokens = torch.randint(1, 128, (2, 6), generator=torch.Generator().manual_seed(2))
    weights = {}
    fwd = [
        (lambda n: n.endswith("hook_router_logits"), lambda t, hook: t),
        ("blocks.0.mlp.hook_expert_weights", lambda t, hook: weights.__setitem__("w", t)),
    ]
    logits = model.run_with_hooks(tokens, fwd_hooks=fwd)
    assert weights["w"].dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(logits, reference(tokens).logits)
