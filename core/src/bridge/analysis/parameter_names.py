"""Parameter names: the HF ones (``named_parameters()``, ``state_dict()``) and TransformerLens's (``tl_parameters()``).

``state_dict()`` keeps the HF model's names (``hf_model.transformer.h.0.attn.c_attn.weight``), right for optimisers,
``load_state_dict`` and ``save_pretrained``. Looking a TransformerLens name up in it
(``state_dict()["blocks.0.attn.W_Q"]``) raises a ``KeyError`` that points to ``tl_parameters()``, where those names are.
"""

from __future__ import annotations

import difflib
import re
from collections import OrderedDict
from typing import Any

from bridge.kernel.errors import BridgeError

#: TransformerLens's parameter names (``blocks.0.attn.W_Q``, ``blocks.3.ln1.w``, ``unembed.W_U``…).
TL_PARAMETER_NAME = re.compile(
    r"(blocks\.\d+\.(attn\.[Wb]_[QKVO]|attn\._[Wb]_[KV]|mlp\.[Wb]_(in|out|gate)|ln[12]\.[wb])"
    r"|embed\.W_E|pos_embed\.W_pos|unembed\.[Wb]_U|ln_final\.[wb])"
)


class ParameterNameError(BridgeError, KeyError):
    """A key that ``state_dict()`` does not have; the message says where that name lives."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def missing_parameter_error(key: Any, keys: list[str]) -> ParameterNameError:
    """The error for ``state_dict()[key]`` when the state dict has no ``key``."""
    if isinstance(key, str) and TL_PARAMETER_NAME.fullmatch(key):
        example = next(iter(keys), "hf_model.…")
        attribute = re.sub(r"blocks\.(\d+)", r"blocks[\1]", key)
        return ParameterNameError(
            f"{key!r} is a TransformerLens parameter name; state_dict() and named_parameters() have the HF model's "
            f"names ({example!r}, …), as optimisers and save_pretrained need. The TransformerLens-named views are "
            f"model.tl_parameters()[{key!r}] (and model.tl_named_parameters()), or the component's own view "
            f"(model.{attribute})."
        )
    close = difflib.get_close_matches(str(key), keys, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ParameterNameError(f"state_dict() has no {key!r}.{hint} Its keys are the HF model's parameter names.")


class HFStateDict(OrderedDict):
    """``state_dict()``'s result: an ``OrderedDict`` whose missing keys raise ``ParameterNameError``."""

    def __missing__(self, key: Any) -> Any:
        raise missing_parameter_error(key, list(self))


__all__ = ["TL_PARAMETER_NAME", "HFStateDict", "ParameterNameError", "missing_parameter_error"]
