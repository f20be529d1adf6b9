"""TransformerLens's model-level switches and loaders, so legacy notebooks' load cells run.

- ``enable_compatibility_mode()``: TransformerLens 4's call for ``HookedTransformer.from_pretrained``'s numbers:
  it processes the weights (fold the norms, centre the writing weights and the unembedding, fold the value
  biases, each where it applies) in one call. The rest of what it switches on in TransformerLens (the legacy hook
  names, ``hook_z`` per head, the attention-input hooks on the pre-norm residual) is how bridge always is.
- ``load_and_process_state_dict(state_dict, ...)``: loads an HF-named state dict into the HF model and processes
  it; a TransformerLens-named one (a ``HookedTransformer``'s) is refused with the bridge way to do it.
- ``sample_datapoint()``: a random text (or its tokens) from ``model.dataset``, which you set: bridge does not
  download training data.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from bridge.analysis.parameter_names import TL_PARAMETER_NAME
from bridge.kernel.errors import BridgeError

if TYPE_CHECKING:
    from bridge.analysis.protocol import HookedModelLike

    class _Processing(HookedModelLike, Protocol):
        def process_weights(
            self,
            fold_ln: bool | None = ...,
            center_writing_weights: bool | None = ...,
            center_unembed: bool | None = ...,
            fold_value_biases: bool | None = ...,
            refactor_factored_attn_matrices: bool | None = ...,
        ) -> Any: ...


logger = logging.getLogger(__name__)


def _where_it_applies(flag: bool) -> bool | None:
    """TransformerLens's ``True`` means "do it where it applies" (it skips centring on RMS models): bridge's None."""
    return None if flag else False


class CompatibilityMode:
    """Mixed into ``Bridge``: ``enable_compatibility_mode``, ``load_and_process_state_dict``, ``sample_datapoint``."""

    #: Whether ``enable_compatibility_mode()`` was called (TransformerLens 4's attribute).
    compatibility_mode: bool = False
    #: What ``sample_datapoint`` draws from: a ``datasets.Dataset`` or a list of rows with a ``"text"`` field, or
    #: a list of texts. None until you set it.
    dataset: Any = None

    def enable_compatibility_mode(
        self: _Processing,
        disable_warnings: bool = False,
        no_processing: bool = False,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        fold_value_biases: bool = True,
        refactor_factored_attn_matrices: bool = False,
    ) -> None:
        """Process the weights as ``HookedTransformer.from_pretrained`` did (TransformerLens 4's switch).

        Each flag ``True`` does its step where it applies to this model (centring the writing weights is for
        LayerNorm models; centring the unembedding is skipped with soft-capped logits), as TransformerLens does;
        ``no_processing=True`` processes nothing. Steps already done (``process_weights``, ``bridge.load(...,
        fold_ln=True)``) are not repeated. ``refactor_factored_attn_matrices=True`` raises where it cannot be exact
        (rotary positions, grouped keys/values). ``disable_warnings`` is accepted for TransformerLens's signature:
        bridge's legacy names raise no warnings. Nothing changes if a step cannot be done.
        """
        if not no_processing:
            done = set(self.cfg.extra.get("weight_processing", []))
            steps = {
                "fold_ln": _where_it_applies(fold_ln),
                "center_writing_weights": _where_it_applies(center_writing_weights),
                "center_unembed": _where_it_applies(center_unembed),
                "fold_value_biases": _where_it_applies(fold_value_biases),
                "refactor_factored_attn_matrices": refactor_factored_attn_matrices,
            }
            if done & {step for step, wanted in steps.items() if wanted is not False}:
                logger.info("enable_compatibility_mode: %s already done, not repeated", sorted(done))
            self.process_weights(**{step: False if step in done else wanted for step, wanted in steps.items()})
        self.compatibility_mode = True  # type: ignore[misc]

    def load_and_process_state_dict(
        self: _Processing,
        state_dict: dict[str, torch.Tensor],
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        fold_value_biases: bool = True,
        refactor_factored_attn_matrices: bool = False,
    ) -> None:
        """Load ``state_dict`` into the HF model, then process the weights as ``enable_compatibility_mode`` does.

        The keys are the HF model's parameter names, as ``model.hf_model.state_dict()`` or ``model.state_dict()``
        (``hf_model.``-prefixed) give them. A ``HookedTransformer`` state dict (``blocks.0.attn.W_Q``…) is refused:
        its weights are already rearranged (and often processed) for TransformerLens's own modules.
        """
        tl_names = [key for key in state_dict if TL_PARAMETER_NAME.fullmatch(key)]
        if tl_names:
            raise BridgeError(
                f"this state dict has TransformerLens parameter names ({tl_names[0]!r}, …), a HookedTransformer's "
                "layout, which bridge does not load: bridge's weights are the HF model's own. Load the HF checkpoint "
                "with bridge.load(name_or_dir) and call model.enable_compatibility_mode() (or process_weights(...)); "
                "to load new HF weights into this model, pass a state dict with HF names "
                "(model.hf_model.state_dict() has them)."
            )
        hf_names = {key.removeprefix("hf_model."): value for key, value in state_dict.items()}
        missing, unexpected = self.hf_model.load_state_dict(hf_names, strict=False)
        absent = [key for key in missing if not key.endswith(".bias")]
        if unexpected or absent:
            raise BridgeError(
                f"the state dict does not fit {type(self.hf_model).__name__}: unexpected keys {unexpected[:3]}, "
                f"missing keys {absent[:3]}; its keys must be the HF model's parameter names"
            )
        with torch.no_grad():  # a bias an earlier processing created, which these weights do not have: none
            for key in missing:
                self.hf_model.get_parameter(key).zero_()
        self.cfg.extra["weight_processing"] = []
        self.process_weights(
            _where_it_applies(fold_ln),
            _where_it_applies(center_writing_weights),
            _where_it_applies(center_unembed),
            _where_it_applies(fold_value_biases),
            refactor_factored_attn_matrices,
        )

    def sample_datapoint(
        self: Any,
        tokenize: bool = False,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
    ) -> str | torch.Tensor:
        """A random text from ``model.dataset`` (drawn with ``numpy.random.randint``, as ``HookedTransformer``
        does, so a numpy seed gives the same sample), or its tokens ``[1, pos]`` (cut to ``n_ctx``) with
        ``tokenize=True``. Set ``model.dataset`` first (a ``datasets.Dataset`` or rows with a ``"text"``
        field, or a list of texts): bridge does not download a model's training data."""
        import numpy as np

        if self.dataset is None:
            raise BridgeError(
                "sample_datapoint draws from model.dataset, which is not set: bridge does not download a model's "
                "training data. Set it to texts of your choice, e.g. model.dataset = datasets.load_from_disk(dir) "
                "(rows with a 'text' field) or a list of strings."
            )
        row = self.dataset[np.random.randint(0, len(self.dataset))]
        text = row if isinstance(row, str) else row["text"]
        if not tokenize:
            return text
        return self.to_tokens(text, prepend_bos=prepend_bos, padding_side=padding_side, truncate=True)


__all__ = ["CompatibilityMode"]
