"""Adapters of the SSM family. Data only: config normalization and component maps."""

from __future__ import annotations

from typing import Any

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import Norm
from bridge_mamba.blocks import SSMBlock
from bridge_mamba.mixers import Mamba1Mixer, Mamba2Mixer


def _ssm_map(mixer: type[Mamba1Mixer | Mamba2Mixer]) -> ComponentMap:
    """Mamba and Mamba-2 share module names: embeddings, layers[i].{norm, mixer}, norm_f."""
    return ComponentMap(
        embed="embeddings",
        blocks="layers",
        block=BlockSpec(SSMBlock, {"norm": Spec(Norm, "norm", {"kind": "RMS"}), "mixer": Spec(mixer, "mixer")}),
        ln_final=Spec(Norm, "norm_f", {"kind": "RMS"}),
    )


def _common_overrides(c: Any) -> dict[str, Any]:
    return {
        "d_mlp": None,
        "act_fn": c.hidden_act,
        "normalization_type": "RMS",
        "positional_embedding_type": "none",
    }


class MambaAdapter(Adapter):
    """Mamba (``MambaForCausalLM``): selective scan with per-channel Δ, no attention, no positions."""

    architectures = ("MambaForCausalLM", "MambaModel")
    model_types = ("mamba",)
    hidden_states_include_embeddings = False  # HF: (block_0, ..., block_{n-1}, norm_f(block_{n-1}))

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            **_common_overrides(c),
            "n_heads": 0,
            "n_key_value_heads": 0,
            "extra": {
                "d_inner": c.intermediate_size,
                "d_state": c.state_size,
                "d_conv": c.conv_kernel,
                "dt_rank": int(c.time_step_rank),
                "residual_in_fp32": c.residual_in_fp32,
            },
        }

    def component_map(self, cfg) -> ComponentMap:
        return _ssm_map(Mamba1Mixer)


class FalconMambaAdapter(MambaAdapter):
    """Falcon-Mamba (``FalconMambaForCausalLM``): Mamba's layout, with Δ, B and C RMS-normalized after ``x_proj``
    (weightless norms; the mixer adds ``hook_dt_in``, ``hook_B``, ``hook_C``)."""

    architectures = ("FalconMambaForCausalLM", "FalconMambaModel")
    model_types = ("falcon_mamba",)

    def config_overrides(self) -> dict[str, Any]:
        out = super().config_overrides()
        out["extra"]["mixer_rms_eps"] = self.hf_config.mixer_rms_eps
        return out


class Mamba2Adapter(Adapter):
    """Mamba-2 (``Mamba2ForCausalLM``): structured state-space duality, per-head scalar decay, grouped B/C.

    ``n_heads``/``d_head`` are the SSM heads (``num_heads``/``head_dim``).
    """

    architectures = ("Mamba2ForCausalLM", "Mamba2Model")
    model_types = ("mamba2",)
    hidden_states_include_embeddings = False

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            **_common_overrides(c),
            "n_heads": c.num_heads,
            "n_key_value_heads": c.num_heads,
            "d_head": c.head_dim,
            "extra": {
                "d_inner": c.num_heads * c.head_dim,
                "d_state": c.state_size,
                "d_conv": c.conv_kernel,
                "n_groups": c.n_groups,
                "chunk_size": c.chunk_size,
                "residual_in_fp32": c.residual_in_fp32,
            },
        }

    def component_map(self, cfg) -> ComponentMap:
        return _ssm_map(Mamba2Mixer)


SSM_ADAPTERS = (MambaAdapter, Mamba2Adapter, FalconMambaAdapter)
