"""``Bridge``, assembled at the top: the kernel's ``HookedModel`` plus the analysis layer.

``Bridge`` = ``HookedModel`` (hook points, the hooks API, ``forward``, ``run_with_cache``) + weight views
(``W_Q``…), weight processing (``fold_ln``…), generation with hooks, SAE splicing, and TransformerLens's
model-level switches (``enable_compatibility_mode``…). Its caches are
``ActivationCache``: the kernel's plain cache plus the residual-stream analysis methods.
"""

from __future__ import annotations

from typing import ClassVar

from bridge.analysis.cache_analysis import CacheAnalysis
from bridge.analysis.compatibility import CompatibilityMode
from bridge.analysis.generation import Generation
from bridge.analysis.model_weights import WeightViews
from bridge.analysis.processing import WeightProcessing
from bridge.analysis.saes import SAESplicing
from bridge.kernel.cache import PlainActivationCache
from bridge.kernel.hooked_model import HookedModel


class ActivationCache(CacheAnalysis, PlainActivationCache):
    """Activations of one forward pass, keyed by canonical hook name (TransformerLens short keys work too:
    ``cache["resid_post", 3]``), with TransformerLens's analysis methods (``accumulated_resid``,
    ``decompose_resid``, ``stack_head_results``, ``logit_attrs``, ``apply_ln_to_stack``…).

    ``ActivationCache(activations, model)`` (TransformerLens's order) works too: the layer count is then
    read from ``model.cfg``."""


class Bridge(CompatibilityMode, WeightViews, WeightProcessing, Generation, SAESplicing, HookedModel):
    """An HF model with named hook points; call it like a TransformerLens ``HookedTransformer``.

    Build one with ``bridge.load`` or ``bridge.wrap``. The HF model stays intact
    (``bridge.hf_model``): components only reach into it while their hooks are in use.
    A model has one bridge at a time; hooks are shared by every thread, so use a bridge from one
    thread at a time (a second thread raises ``ConcurrentUseError``; give it a ``copy.deepcopy``).
    """

    cache_class: ClassVar[type[PlainActivationCache]] = ActivationCache


__all__ = ["ActivationCache", "Bridge"]
