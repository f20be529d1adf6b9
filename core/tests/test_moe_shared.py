"""Core MoE pieces shared by several families: the grouped sigmoid routing rule (DeepSeek-V3, GLM-4-MoE) against
HF's own routers, and the ``shared_expert`` option (a core ``MLP`` child and ``hook_shared_expert_out``) on an HF
MoE block, without any plugin."""

import pytest
import torch
from transformers import DeepseekV3Config, Glm4MoeConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeMoE, Glm4MoeTopkRouter

from bridge.kernel.components import MLP
from bridge.kernel.components.moe import MoE, sigmoid_group_topk
from bridge.kernel.config import config_from_hf

SIZES = dict(hidden_size=16, n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2)


def randomized(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return module


@pytest.mark.parametrize("norm_topk_prob", [True, False])
@pytest.mark.parametrize(
    ("router_class", "config_class"),
    [(DeepseekV3TopkRouter, DeepseekV3Config), (Glm4MoeTopkRouter, Glm4MoeConfig)],
    ids=["deepseek_v3", "glm4_moe"],
)
def test_sigmoid_group_topk_reproduces_hf_routers(router_class, config_class, norm_topk_prob):
    config = config_class(**SIZES, routed_scaling_factor=2.5, norm_topk_prob=norm_topk_prob)
    router = randomized(router_class(config), seed=0)  # weight and e_score_correction_bias
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    logits, weights, indices = router(x)
    got_weights, got_indices = sigmoid_group_topk(router, logits)
    order, got_order = indices.argsort(-1), got_indices.argsort(-1)
    assert torch.equal(indices.gather(1, order), got_indices.gather(1, got_order))
    torch.testing.assert_close(got_weights.gather(1, got_order), weights.gather(1, order), atol=1e-6, rtol=0)


def test_shared_expert_option_is_a_core_mlp_with_its_output_hook():
    config = Glm4MoeConfig(**SIZES, moe_intermediate_size=8, n_shared_experts=1)
    block = randomized(Glm4MoeMoE(config), seed=2).eval()
    moe = MoE(block, config_from_hf(config), sigmoid_group_topk, "gate", "experts", shared_expert="shared_experts")
    assert isinstance(moe.shared_expert, MLP) and moe.shared_expert.hf_module is block.shared_experts
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
    expected = block(x)
    seen = {}
    moe.hook_shared_expert_out.add_hook(lambda t, hook: seen.__setitem__("out", t))
    moe.shared_expert.hook_post.add_hook(lambda t, hook: seen.__setitem__("post", t))
    torch.testing.assert_close(block(x), expected, atol=0, rtol=0)
    torch.testing.assert_close(seen["out"], block.shared_experts(x), atol=0, rtol=0)
    assert seen["post"].shape == (2, 5, 8)
    moe.hook_shared_expert_out.add_hook(lambda t, hook: torch.zeros_like(t))
    routed = block.experts(x.view(-1, 16), *reversed(block.gate(x)[1:])).view(2, 5, 16)
    torch.testing.assert_close(block(x), routed, atol=1e-6, rtol=0)
