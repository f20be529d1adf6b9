"""Adapters of the BERT-style encoders: BERT, RoBERTa, XLM-RoBERTa and DistilBERT, bare and with their masked-LM
and sequence-classification heads.

Every path is relative to the top-level HF model (``root=""``): the base model sits at ``bert.``/``roberta.``…
under a head, at the top in the bare ``*Model`` classes, and the heads are outside it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bridge import Adapter, BlockSpec, ComponentMap, Spec
from bridge.components import MLP, Attention, Norm, PostNormBlock, SplitQKV
from bridge.kernel import BridgeConfig
from bridge_encoders.blocks import BertBlock
from bridge_encoders.components import MLMHead, ModuleInput, ModuleOutput

#: BERT's layer (also RoBERTa's and XLM-R's): attention nested in ``attention.self``, projection in
#: ``attention.output.dense``, the MLP across ``intermediate.dense`` and ``output.dense``.
BERT_BLOCK = BlockSpec(
    BertBlock,
    {
        "attn": Spec(
            Attention,
            "attention",
            {"qkv": SplitQKV("self.query", "self.key", "self.value"), "out": "output.dense", "calls_attention": "self"},
        ),
        "ln1": Spec(Norm, "attention.output.LayerNorm"),
        "mlp": Spec(MLP, "", {"pre": "intermediate.dense", "out": "output.dense"}),
        "ln2": Spec(Norm, "output.LayerNorm"),
    },
    extra_paths={
        "attn_out": "attention.output.dense",
        "attn_dropout": "attention.output.dropout",
        "intermediate": "intermediate",
        "mlp_out": "output.dense",
        "mlp_dropout": "output.dropout",
    },
)

#: DistilBERT's layer: the core post-norm wiring as it is.
DISTILBERT_BLOCK = BlockSpec(
    PostNormBlock,
    {
        "attn": Spec(Attention, "attention", {"qkv": SplitQKV("q_lin", "k_lin", "v_lin"), "out": "out_lin"}),
        "ln1": Spec(Norm, "sa_layer_norm"),
        "mlp": Spec(MLP, "ffn", {"pre": "lin1", "out": "lin2"}),
        "ln2": Spec(Norm, "output_layer_norm"),
    },
)


class EncoderAdapter(Adapter):
    """Common ground of the encoders: bidirectional attention, losses against ``labels=`` (masked positions of
    a masked LM, a class per sequence for a classifier), absolute positions, no final norm (HF's last hidden
    state is the last block's output)."""

    loss_kind = "labels"
    position_ids = "absolute"
    final_norm_in_hidden_states = False
    #: The bare encoder's HF class (its paths have no prefix); heads hold it at ``base_model_prefix``.
    base_architecture: ClassVar[str] = ""

    def prefix(self) -> str:
        """The path of the base model followed by a dot (``"bert."``), or ``""`` in the bare model."""
        cls = self.model_class()
        return "" if cls.__name__ == self.base_architecture else f"{cls.base_model_prefix}."

    def config_overrides(self) -> dict[str, Any]:
        return {"normalization_type": "LN", "positional_embedding_type": "standard"}

    def bridge_config(self) -> BridgeConfig:
        cfg = super().bridge_config()
        cfg.default_prepend_bos = False  # an encoder's tokenizer adds its own [CLS] … [SEP]
        cfg.extra["attention_dir"] = "bidirectional"
        return cfg


class BertAdapter(EncoderAdapter):
    """``BertModel``, ``BertForMaskedLM`` (``mlm_head.*`` and ``unembed`` = ``cls.predictions.decoder``) and
    ``BertForSequenceClassification`` (``hook_pooled`` = the pooler's output ``[b, d_model]``, ``unembed`` =
    ``classifier``; logits ``[b, n_labels]``)."""

    architectures = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")
    model_types = ("bert",)
    base_architecture = "BertModel"
    mlm_head: ClassVar[tuple[str, dict[str, str], str]] = (
        "cls.predictions.transform",
        {"dense": "dense", "norm": "LayerNorm"},
        "cls.predictions.decoder",
    )

    def classifier(self, p: str) -> tuple[dict[str, Spec], str]:
        """The classification head's hook points and its output projection (the unembedding)."""
        return {"hook_pooled": Spec(ModuleOutput, f"{p}pooler")}, "classifier"

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        p = self.prefix()
        cmap = ComponentMap(
            root="",
            embed=f"{p}embeddings.word_embeddings",
            pos_embed=f"{p}embeddings.position_embeddings",
            blocks=f"{p}encoder.layer",
            block=BERT_BLOCK,
            hooks={"hook_token_type_embed": Spec(ModuleOutput, f"{p}embeddings.token_type_embeddings")},
            extra={"ln_embed": Spec(Norm, f"{p}embeddings.LayerNorm")},
        )
        return with_head(cmap, self.model_class().__name__, self)


class RobertaAdapter(BertAdapter):
    """``RobertaModel``, ``RobertaForMaskedLM`` (``lm_head``) and ``RobertaForSequenceClassification``
    (``hook_pooled`` = the classifier's ``out_proj`` input, ``tanh(dense(h_<s>))``). Positions are RoBERTa's
    own, offset past the padding id (HF computes them from the tokens)."""

    architectures = ("RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification")
    model_types = ("roberta",)
    base_architecture = "RobertaModel"
    mlm_head = ("lm_head", {"dense": "dense", "norm": "layer_norm"}, "lm_head.decoder")
    position_ids = "model"

    def classifier(self, p: str) -> tuple[dict[str, Spec], str]:
        return {"hook_pooled": Spec(ModuleInput, "classifier.out_proj")}, "classifier.out_proj"


class XLMRobertaAdapter(RobertaAdapter):
    """``XLMRobertaModel`` and ``XLMRobertaForMaskedLM``: RoBERTa's layout."""

    architectures = ("XLMRobertaModel", "XLMRobertaForMaskedLM")
    model_types = ("xlm-roberta",)
    base_architecture = "XLMRobertaModel"


class DistilBertAdapter(EncoderAdapter):
    """``DistilBertModel`` and ``DistilBertForMaskedLM`` (``vocab_transform`` → activation → ``vocab_layer_norm``,
    then ``vocab_projector``): no token types; the core post-norm wiring."""

    architectures = ("DistilBertModel", "DistilBertForMaskedLM")
    model_types = ("distilbert",)
    base_architecture = "DistilBertModel"
    mlm_head = ("", {"dense": "vocab_transform", "norm": "vocab_layer_norm"}, "vocab_projector")

    def config_overrides(self) -> dict[str, Any]:
        c = self.hf_config
        return {
            **super().config_overrides(),
            "n_layers": c.n_layers,
            "d_model": c.dim,
            "n_heads": c.n_heads,
            "n_key_value_heads": c.n_heads,
            "d_head": c.dim // c.n_heads,
            "d_mlp": c.hidden_dim,
            "act_fn": c.activation,
            "eps": 1e-12,
        }

    def component_map(self, cfg: BridgeConfig) -> ComponentMap:
        p = self.prefix()
        cmap = ComponentMap(
            root="",
            embed=f"{p}embeddings.word_embeddings",
            pos_embed=f"{p}embeddings.position_embeddings",
            blocks=f"{p}transformer.layer",
            block=DISTILBERT_BLOCK,
            extra={"ln_embed": Spec(Norm, f"{p}embeddings.LayerNorm")},
        )
        return with_head(cmap, self.model_class().__name__, self)


def with_head(cmap: ComponentMap, architecture: str, adapter: Any) -> ComponentMap:
    """``cmap`` with the head the HF class has: a masked-LM head (``mlm_head`` and the decoder as the
    unembedding), a sequence classifier (``hook_pooled``, the classifier as the unembedding), or none."""
    import dataclasses

    if architecture.endswith("ForMaskedLM"):
        path, options, decoder = adapter.mlm_head
        return dataclasses.replace(
            cmap, extra={**cmap.extra, "mlm_head": Spec(MLMHead, path, options)}, head_unembed=decoder
        )
    if architecture.endswith("ForSequenceClassification"):
        hooks, unembed = adapter.classifier(adapter.prefix())
        return dataclasses.replace(cmap, head_hooks=hooks, head_unembed=unembed)
    return cmap


__all__ = ["BertAdapter", "DistilBertAdapter", "EncoderAdapter", "RobertaAdapter", "XLMRobertaAdapter"]
