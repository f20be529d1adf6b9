"""Adapters written the way a third-party author would, with bridge's public API only (no name starting with ``_``
is used here; ``test_public_block_api`` checks it), each with its ``Examples`` (the tiny config the kit builds).

Core's own tests run on these, never on a family distribution (``fixture_plugin`` registers them for the test
session): GPT-2 (fused Conv1D q/k/v, learned positions), Llama (split q/k/v, RoPE, GQA, gated MLP), Phi (a parallel
block reading one shared norm), GPT-J (attention computed inline), Qwen3 (q/k norms: core's ``QKNormAttention``),
Nemotron (a layer norm scaling by ``1 + w``: ``Norm(kind="LN", weight_offset=1.0)``), BERT (a masked LM with
post-norm blocks, attention called by a submodule: ``calls_attention``) and Jamba (a hybrid of Mamba and attention
layers with dense and MoE MLPs: ``LayerKinds``). OPT's pre- and post-norm blocks are in the ``bridge new-plugin``
template.
"""

from __future__ import annotations

from typing import Any, ClassVar

import einops
import torch
import transformers
from torch import nn
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

from bridge import Adapter, BlockSpec, ComponentMap, LayerKinds, Spec
from bridge.components import (
    MLP,
    Attention,
    Block,
    Component,
    ForwardOverride,
    FusedQKV,
    MoE,
    Norm,
    OutputTap,
    PostNormBlock,
    QKNormAttention,
    SequentialBlock,
    SharedNormParallelBlock,
    SplitQKV,
    softmax_then_topk,
)
from bridge.kernel import TINY_SPECIAL_IDS, TINY_VOCAB, BridgeConfig, Examples, HookPoint

# ------------------------------------------------------------------------------------------------ GPT-2


class GPT2Adapter(Adapter):
    """GPT-2: learned positions, pre-LN, fused ``c_attn`` (``[q | k | v]``, Conv1D), GELU MLP."""

    architectures: ClassVar[tuple[str, ...]] = ("GPT2LMHeadModel", "GPT2Model")
    model_types: ClassVar[tuple[str, ...]] = ("gpt2",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {"d_mlp": c.n_inner or 4 * c.n_embd, "act_fn": c.activation_function}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        children = {
            "ln1": Spec(Norm, "ln_1"),
            "attn": Spec(Attention, "attn", {"qkv": FusedQKV("c_attn"), "out": "c_proj"}),
            "ln2": Spec(Norm, "ln_2"),
            "mlp": Spec(MLP, "mlp", {"pre": "c_fc", "out": "c_proj"}),
        }
        return ComponentMap(
            embed="wte",
            pos_embed="wpe",
            blocks="h",
            block=BlockSpec(SequentialBlock, children),
            ln_final=Spec(Norm, "ln_f"),
        )


class GPT2Examples(Examples):
    adapter = GPT2Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.GPT2Config(
            architectures=[architecture or "GPT2LMHeadModel"],
            n_layer=2,
            n_embd=32,
            n_head=4,
            n_positions=64,
            vocab_size=TINY_VOCAB,
            **TINY_SPECIAL_IDS,
        )


# ------------------------------------------------------------------------------------------------ Llama


class LlamaAdapter(Adapter):
    """Llama: RoPE, GQA, RMSNorm, gated SiLU MLP."""

    architectures: ClassVar[tuple[str, ...]] = ("LlamaForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("llama",)
    #: The attention component and its options (subclasses swap in a q/k-norm attention).
    attention: ClassVar[tuple[type[Attention], dict[str, Any]]] = (
        Attention,
        {"qkv": SplitQKV("q_proj", "k_proj", "v_proj"), "out": "o_proj", "rotary": True},
    )

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return {
            "d_head": d_head,
            "positional_embedding_type": "rotary",
            "rotary_dim": d_head,
            "normalization_type": "RMS",
            "act_fn": c.hidden_act,
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        kind, options = self.attention
        children = {
            "ln1": Spec(Norm, "input_layernorm", {"kind": "RMS"}),
            "attn": Spec(kind, "self_attn", options),
            "ln2": Spec(Norm, "post_attention_layernorm", {"kind": "RMS"}),
            "mlp": Spec(MLP, "mlp", {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"}),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(SequentialBlock, children),
            ln_final=Spec(Norm, "norm", {"kind": "RMS"}),
        )


#: The Llama-layout tiny config's sizes (GQA: 4 query heads, 2 key/value heads).
LLAMA_SIZES: dict[str, Any] = {
    "vocab_size": TINY_VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    **TINY_SPECIAL_IDS,
}


class LlamaExamples(Examples):
    adapter = LlamaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.LlamaConfig(architectures=["LlamaForCausalLM"], **LLAMA_SIZES)


# ------------------------------------------------------------------------------------------------ Qwen3


class Qwen3Adapter(LlamaAdapter):
    """Qwen3: Llama with RMS norms on each head's query and key before RoPE (``hook_q_normed``/``hook_k_normed``)."""

    architectures: ClassVar[tuple[str, ...]] = ("Qwen3ForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("qwen3",)
    attention: ClassVar[tuple[type[Attention], dict[str, Any]]] = (
        QKNormAttention,
        {"qkv": SplitQKV("q_proj", "k_proj", "v_proj"), "out": "o_proj", "q_norm": "q_norm", "k_norm": "k_norm"},
    )


class Qwen3Examples(Examples):
    adapter = Qwen3Adapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.Qwen3Config(architectures=["Qwen3ForCausalLM"], head_dim=8, **LLAMA_SIZES)


# ------------------------------------------------------------------------------------------------ Nemotron


class NemotronAdapter(Adapter):
    """Nemotron: ``LayerNorm1P`` (a layer norm scaling by ``1 + w``), partial RoPE, a plain squared-ReLU MLP."""

    architectures: ClassVar[tuple[str, ...]] = ("NemotronForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("nemotron",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        factor = (c.rope_parameters or {}).get("partial_rotary_factor", 1.0)
        return {
            "d_head": d_head,
            "positional_embedding_type": "rotary",
            "rotary_dim": int(d_head * factor),
            "normalization_type": "LN",
            "act_fn": c.hidden_act,
            "eps": c.norm_eps,
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        norm = {"kind": "LN", "weight_offset": 1.0}
        children = {
            "ln1": Spec(Norm, "input_layernorm", norm),
            "attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}),
            "ln2": Spec(Norm, "post_attention_layernorm", norm),
            "mlp": Spec(MLP, "mlp", {"pre": "up_proj", "out": "down_proj"}),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(SequentialBlock, children),
            ln_final=Spec(Norm, "norm", norm),
        )


class NemotronExamples(Examples):
    adapter = NemotronAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.NemotronConfig(
            architectures=["NemotronForCausalLM"], partial_rotary_factor=0.5, **LLAMA_SIZES
        )


# ------------------------------------------------------------------------------------------------ Phi


class PhiAdapter(Adapter):
    """Phi-1/2: ``post = pre + attn(ln(pre)) + mlp(ln(pre))`` with one ``input_layernorm``, partial rotary."""

    architectures: ClassVar[tuple[str, ...]] = ("PhiForCausalLM",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        d_head = c.hidden_size // c.num_attention_heads
        factor = (c.rope_parameters or {}).get("partial_rotary_factor", 1.0)
        return {
            "normalization_type": "LN",
            "parallel_attn_mlp": True,
            "positional_embedding_type": "rotary",
            "rotary_dim": int(d_head * factor),
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        attention = Spec(
            Attention, "self_attn", {"qkv": SplitQKV("q_proj", "k_proj", "v_proj"), "out": "dense", "rotary": True}
        )
        children = {
            "ln1": Spec(Norm, "input_layernorm"),
            "attn": attention,
            "mlp": Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"}),
        }
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=BlockSpec(
                SharedNormParallelBlock, children, {"attn_dropout": "resid_dropout", "mlp_dropout": "resid_dropout"}
            ),
            ln_final=Spec(Norm, "final_layernorm"),
        )


class PhiExamples(Examples):
    adapter = PhiAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.PhiConfig(
            architectures=["PhiForCausalLM"],
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            partial_rotary_factor=0.5,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attention_dropout=0.0,
            **TINY_SPECIAL_IDS,
        )


# ------------------------------------------------------------------------------------------------ GPT-J


class GPTJBlock(SharedNormParallelBlock):
    """GPT-J: ``ln_1`` shared by attention and MLP; the HF block returns ``(hidden, attention weights)``."""

    returns_attention_weights = True


class GPTJAttention(Attention):
    """GPT-J's attention computes scores inline (``_attn``), not through ``AttentionInterface``: while an
    attention-internal hook is active its forward is replaced by the same computation around
    ``attend_with_hooks``, which fires ``hook_rot_q/k``, ``hook_attn_scores``, ``hook_pattern`` and ``hook_z``."""

    uses_seam = False

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module, cfg, qkv=SplitQKV("q_proj", "k_proj", "v_proj"), out="out_proj", rotary=True)
        internal = tuple(getattr(self, name) for name in self.internal_hooks)
        self.attach(ForwardOverride(hf_module, self.forward_with_hooks, internal))

    def forward_with_hooks(
        self,
        original: Any,
        hidden_states: torch.Tensor,
        layer_past: Any = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.hf_module
        split = "b p (h d) -> b p h d"
        query = einops.rearrange(m.q_proj(hidden_states), split, h=self.n_heads)  # [b, p, h, d]
        key = einops.rearrange(m.k_proj(hidden_states), split, h=self.n_heads)
        value = einops.rearrange(m.v_proj(hidden_states), "b p (h d) -> b h p d", h=self.n_heads)
        sincos = m.embed_positions.to(position_ids.device)[position_ids].to(key.dtype)  # [b, p, rotary_dim]
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        rot = m.rotary_dim if m.rotary_dim is not None else self.d_head
        query = torch.cat([apply_rotary_pos_emb(query[..., :rot], sin, cos), query[..., rot:]], dim=-1)
        key = torch.cat([apply_rotary_pos_emb(key[..., :rot], sin, cos), key[..., rot:]], dim=-1)
        query, key = query.transpose(1, 2), key.transpose(1, 2)  # [b, h, p, d]
        if layer_past is not None:
            key, value = layer_past.update(key, value, m.layer_idx)
        z, pattern = self.attend_with_hooks(
            m, query, key, value, attention_mask, scaling=1.0 / float(m.scale_attn), dropout=m.attn_dropout.p
        )  # z: [b, p, h, d]
        out = m.resid_dropout(m.out_proj(einops.rearrange(z, "b p h d -> b p (h d)")))
        return out, pattern


class GPTJAdapter(Adapter):
    """GPT-J: parallel block with one shared norm, inline attention with interleaved partial rotary."""

    architectures: ClassVar[tuple[str, ...]] = ("GPTJForCausalLM",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "normalization_type": "LN",
            "parallel_attn_mlp": True,
            "d_mlp": c.n_inner or 4 * c.n_embd,
            "positional_embedding_type": "rotary",
            "rotary_dim": c.rotary_dim,
            "rotary_adjacent_pairs": True,
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        children = {
            "ln1": Spec(Norm, "ln_1"),
            "attn": Spec(GPTJAttention, "attn"),
            "mlp": Spec(MLP, "mlp", {"pre": "fc_in", "out": "fc_out"}),
        }
        return ComponentMap(embed="wte", blocks="h", block=BlockSpec(GPTJBlock, children), ln_final=Spec(Norm, "ln_f"))


class GPTJExamples(Examples):
    adapter = GPTJAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.GPTJConfig(
            architectures=["GPTJForCausalLM"],
            vocab_size=TINY_VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            rotary_dim=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **TINY_SPECIAL_IDS,
        )


# ------------------------------------------------------------------------------------------------ BERT


class BertLayerBlock(PostNormBlock):
    """A BERT layer: ``mid = pre + attn(pre)``, ``post = ln1(mid) + mlp(ln1(mid))``, output ``ln2(post)``.

    HF's ``BertSelfOutput``/``BertOutput`` add the residual inside the module holding the norm; the wiring calls
    their parts (``self``, ``output.dense``, ``intermediate``…) so that each sum is a hook point. The MLP has no
    module of its own (``intermediate`` and ``output`` sit on the layer): an inline child."""

    inline_children = ("mlp",)

    def run_attention(self, x: torch.Tensor, call_kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        attention = self.hf_modules["attn"]
        z, weights = attention.self(x, **call_kwargs)[:2]  # [b, p, d_model] (heads concatenated)
        return attention.output.dropout(attention.output.dense(z)), weights

    def run_mlp(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.hf_module
        return layer.output.dropout(layer.output.dense(layer.intermediate(x)))  # [b, p, d_model]


class BertAdapter(Adapter):
    """BERT as a masked LM: learned absolute positions (and token types), post-LN layers, GELU MLP."""

    architectures: ClassVar[tuple[str, ...]] = ("BertForMaskedLM",)
    model_types: ClassVar[tuple[str, ...]] = ("bert",)
    #: HF's ``hidden_states`` are the embeddings' output and each layer's; there is no final norm.
    final_norm_in_hidden_states: ClassVar[bool] = False
    #: A masked LM: ``return_type="logits"`` is HF's ``logits`` (there is no next-token loss).
    output_fields: ClassVar[dict[str, str]] = {"logits": "logits"}

    def config_overrides(self) -> dict[str, Any]:
        return {"normalization_type": "LN", "act_fn": self.hf_config.hidden_act}

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        attention = {
            "qkv": SplitQKV("self.query", "self.key", "self.value"),
            "out": "output.dense",
            "calls_attention": "self",  # BertSelfAttention calls the attention function, BertAttention holds both
        }
        children = {
            "attn": Spec(Attention, "attention", attention),
            "ln1": Spec(Norm, "attention.output.LayerNorm"),
            "mlp": Spec(MLP, "", {"pre": "intermediate.dense", "out": "output.dense"}),
            "ln2": Spec(Norm, "output.LayerNorm"),
        }
        return ComponentMap(
            embed="embeddings.word_embeddings",
            pos_embed="embeddings.position_embeddings",
            blocks="encoder.layer",
            block=BlockSpec(BertLayerBlock, children),
            extra={"ln_embed": Spec(Norm, "embeddings.LayerNorm")},
        )


class BertExamples(Examples):
    adapter = BertAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.BertConfig(
            architectures=["BertForMaskedLM"],
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=TINY_SPECIAL_IDS["pad_token_id"],
        )


# ------------------------------------------------------------------------------------------------ Jamba


class Mixer(Component):
    """A token mixer that is not attention (Jamba's Mamba layer), seen from outside: ``hook_out``, what it writes
    to the residual stream ``[b, p, d_model]``."""

    def __init__(self, hf_module: nn.Module, cfg: BridgeConfig) -> None:
        super().__init__(hf_module)
        self.hook_out = HookPoint()
        self.attach(OutputTap(hf_module, self.hook_out, (self.hook_out,)))


class MixerBlock(Block):
    """A pre-norm layer whose token mixer is not attention: ``mid = pre + mixer(ln1(pre))``, ``post = mid +
    mlp(ln2(mid))``; ``hook_mixer_out`` is the mixer's write (``mixer.hook_out``)."""

    block_hooks = ("hook_resid_pre", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
    algebra = (
        ("hook_resid_mid", ("hook_resid_pre", "mixer.hook_out")),
        ("hook_resid_post", ("hook_resid_mid", "hook_mlp_out")),
    )
    forwards_to = "mixer"
    offers_input_hooks = False

    def wire(self, hidden: torch.Tensor, call_kwargs: dict[str, Any]) -> Any:
        resid_pre = self.hook_resid_pre(hidden)
        mixed = self.hf_modules["mixer"](
            self.run_norm("ln1", resid_pre),
            cache_params=call_kwargs.get("past_key_values"),
            attention_mask=call_kwargs.get("attention_mask"),
        )
        resid_mid = self.hook_resid_mid(resid_pre + mixed)
        mlp_out = self.hook_mlp_out(self.run_mlp(self.run_norm("ln2", resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class JambaAdapter(Adapter):
    """Jamba: Mamba and attention layers (``layers_block_type``), each with a dense or a sparse MoE MLP
    (``layers_num_experts``); no positional encoding; RMS norms."""

    architectures: ClassVar[tuple[str, ...]] = ("JambaForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("jamba",)

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            "normalization_type": "RMS",
            "positional_embedding_type": "none",
            "act_fn": c.hidden_act,
            "extra": {"layer_types": list(c.layers_block_type)},
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        c = self.hf_config
        rms = {"kind": "RMS"}
        dense = Spec(MLP, "feed_forward", {"pre": "gate_proj", "pre_linear": "up_proj", "out": "down_proj"})
        sparse = Spec(MoE, "feed_forward", {"routing": softmax_then_topk(normalize=False), "router": "router"})
        norms = {"ln1": Spec(Norm, "input_layernorm", rms), "ln2": Spec(Norm, "pre_ff_layernorm", rms)}
        attention = Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "o_proj"})
        specs = {}
        for mixer in ("attention", "mamba"):
            for mlp, spec in (("dense", dense), ("moe", sparse)):
                children = {**norms, "mlp": spec}
                if mixer == "attention":
                    specs[f"{mixer}-{mlp}"] = BlockSpec(SequentialBlock, {**children, "attn": attention})
                else:
                    specs[f"{mixer}-{mlp}"] = BlockSpec(MixerBlock, {**children, "mixer": Spec(Mixer, "mamba")})
        experts = c.layers_num_experts
        kinds = tuple(f"{t}-{'moe' if n > 1 else 'dense'}" for t, n in zip(c.layers_block_type, experts, strict=True))
        return ComponentMap(
            embed="embed_tokens",
            blocks="layers",
            block=LayerKinds(kinds=kinds, specs=specs),
            ln_final=Spec(Norm, "final_layernorm", rms),
        )


class JambaExamples(Examples):
    adapter = JambaAdapter

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        return transformers.JambaConfig(
            architectures=["JambaForCausalLM"],
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            attn_layer_period=2,
            attn_layer_offset=1,  # layer 0 is a Mamba layer: the first attention layer is layer 1
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=4,
            num_experts_per_tok=2,
            mamba_d_state=4,
            mamba_d_conv=4,
            mamba_expand=2,
            mamba_dt_rank=4,
            max_position_embeddings=64,
            use_mamba_kernels=False,
            **TINY_SPECIAL_IDS,
        )


ADAPTERS: tuple[type[Adapter], ...] = (
    GPT2Adapter,
    LlamaAdapter,
    Qwen3Adapter,
    NemotronAdapter,
    PhiAdapter,
    GPTJAdapter,
    BertAdapter,
    JambaAdapter,
)
EXAMPLES: tuple[type[Examples], ...] = (
    GPT2Examples,
    LlamaExamples,
    Qwen3Examples,
    NemotronExamples,
    PhiExamples,
    GPTJExamples,
    BertExamples,
    JambaExamples,
)
