"""Benchmark models for ``make bench``: label → HF config (random weights, built by the benchmark).

The SSMs are 4 layers, d_model 256, with the vocabularies and SSM sizes of the released small
checkpoints (state-spaces/mamba-130m, mamba2-130m), so the slow torch path's cost is realistic. The hybrids
(Jamba, Nemotron-H, Qwen3-Next) are 4 to 6 layers at d_model 256 with each layer kind of the released layouts.
"""

from __future__ import annotations

from transformers import JambaConfig, Mamba2Config, MambaConfig, NemotronHConfig, Qwen3NextConfig


def bench_configs() -> dict[str, object]:
    return {
        "mamba (4L, d256)": MambaConfig(
            num_hidden_layers=4,
            hidden_size=256,
            state_size=16,
            expand=2,
            conv_kernel=4,
            vocab_size=50280,
            architectures=["MambaForCausalLM"],
        ),
        "mamba2 (4L, d256)": Mamba2Config(
            num_hidden_layers=4,
            hidden_size=256,
            expand=2,
            num_heads=8,
            head_dim=64,
            n_groups=1,
            state_size=128,
            conv_kernel=4,
            chunk_size=256,
            vocab_size=50288,
            architectures=["Mamba2ForCausalLM"],
        ),
        "jamba (4L, d256: 1 attention, 3 Mamba; MoE on 2)": JambaConfig(
            num_hidden_layers=4,
            hidden_size=256,
            intermediate_size=512,
            num_attention_heads=8,
            num_key_value_heads=2,
            attn_layer_period=4,
            attn_layer_offset=2,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=4,
            num_experts_per_tok=2,
            mamba_d_state=16,
            mamba_expand=2,
            vocab_size=32000,
            architectures=["JambaForCausalLM"],
        ),
        "nemotron-h (6L, d256: M-M*-ME)": NemotronHConfig(
            hybrid_override_pattern="M-M*-ME",
            hidden_size=256,
            intermediate_size=512,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=32,
            mamba_num_heads=8,
            mamba_head_dim=64,
            n_groups=1,
            ssm_state_size=64,
            chunk_size=64,
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=256,
            moe_shared_expert_intermediate_size=256,
            vocab_size=32000,
            architectures=["NemotronHForCausalLM"],
        ),
        "qwen3-next (4L, d256: 3 Gated DeltaNet, 1 gated attention; MoE)": Qwen3NextConfig(
            num_hidden_layers=4,
            hidden_size=256,
            intermediate_size=512,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=32,
            linear_num_key_heads=4,
            linear_num_value_heads=8,
            linear_key_head_dim=32,
            linear_value_head_dim=32,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=128,
            shared_expert_intermediate_size=256,
            vocab_size=32000,
            architectures=["Qwen3NextForCausalLM"],
        ),
    }
