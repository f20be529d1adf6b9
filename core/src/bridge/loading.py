"""``bridge.load`` and ``bridge.wrap``: the kernel's resolution, building a ``Bridge``, with opt-in weight
processing after loading."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from bridge.kernel import resolution
from bridge.kernel.adapter import Adapter
from bridge.model import Bridge


def load(
    name_or_path: str | os.PathLike,
    *,
    adapter: type[Adapter] | None = None,
    tokenizer: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    fold_ln: bool = False,
    center_writing_weights: bool = False,
    center_unembed: bool = False,
    fold_value_biases: bool = False,
    refactor_factored_attn_matrices: bool = False,
    default_prepend_bos: bool | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
    **hf_kwargs: Any,
) -> Bridge:
    """Load an HF model (a directory, or a hub name found in the HF cache) and bridge it.

    The adapter is ``adapter=`` if given, else the one an installed plugin registered for
    the config's architecture or ``model_type``. Model repository code never runs unless
    ``trust_remote_code=True``; safetensors weights are preferred. ``tokenizer=False``
    skips loading a tokenizer; image models get their image processor (``AutoImageProcessor``) instead of
    or as well as a tokenizer, and vision-language models their processor (``AutoProcessor``: text and images
    together). ``fold_ln``, ``center_writing_weights``, ``center_unembed`` and
    ``fold_value_biases``, ``refactor_factored_attn_matrices`` (default False) process the weights after loading,
    as ``Bridge.process_weights`` does (``model.enable_compatibility_mode()`` does what
    ``HookedTransformer.from_pretrained`` did, in one call). ``default_prepend_bos`` sets
    ``cfg.default_prepend_bos`` (default True: text gets a BOS, as ``HookedTransformer`` did; ``False`` matches
    TransformerLens 4's bridge on the families where it prepends none). Further keyword arguments go to
    ``from_pretrained``.

    ``device_map`` (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict of module name → device, ``"cpu"``
    or ``"disk"``), ``max_memory`` (device → bytes or ``"2GiB"``) and ``offload_folder`` (where ``"disk"``
    modules' weights go) spread the model over devices and offload it with accelerate
    (``pip install bridge-core[scale]``); hooks then fire on the device each layer runs on.
    """
    bridge = resolution.load(
        name_or_path,
        adapter=adapter,
        tokenizer=tokenizer,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        revision=revision,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
        model_class=Bridge,
        default_prepend_bos=default_prepend_bos,
        **hf_kwargs,
    )
    processing = (fold_ln, center_writing_weights, center_unembed, fold_value_biases, refactor_factored_attn_matrices)
    if any(processing):
        bridge.process_weights(*processing)
    return bridge


def wrap(
    hf_model: nn.Module,
    tokenizer: Any = None,
    *,
    adapter: type[Adapter] | None = None,
    replace: bool = False,
    image_processor: Any = None,
    processor: Any = None,
    default_prepend_bos: bool | None = None,
) -> Bridge:
    """Bridge an HF model you already loaded. The model is changed only while hooks are in use;
    ``bridge.detach()`` (or ``bridge.unwrap(hf_model)``) gives it back untouched.

    A model has at most one bridge: wrapping it again raises, unless ``replace=True``, which first
    detaches the bridge it had. ``image_processor`` turns images into pixel values for image models;
    ``processor`` turns text and images together into a vision-language model's inputs.
    A model accelerate dispatched (``from_pretrained(device_map=...)``, ``dispatch_model``, ``cpu_offload``,
    ``disk_offload``) keeps its placement: inputs go to its input embedding's device, and tensors hooks
    return are moved to the device of the activation they replace."""
    return resolution.wrap(
        hf_model,
        tokenizer,
        adapter=adapter,
        replace=replace,
        image_processor=image_processor,
        processor=processor,
        model_class=Bridge,
        default_prepend_bos=default_prepend_bos,
    )


__all__ = ["load", "wrap"]
