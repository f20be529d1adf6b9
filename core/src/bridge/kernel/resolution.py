"""Resolution: from a name, a directory or an HF model to a hooked model.

Reads the HF config (offline-capable, no repository code unless asked), picks the adapter, loads the HF model
with the class the adapter names and wraps it in ``model_class`` (the kernel's ``HookedModel`` by default;
``bridge.load``/``bridge.wrap`` build a ``bridge.Bridge``)."""

from __future__ import annotations

import os
import warnings
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin

from bridge.kernel.adapter import Adapter
from bridge.kernel.dispatch import input_device, is_dispatched
from bridge.kernel.errors import BridgeError, RemoteCodeRequiredError
from bridge.kernel.hooked_model import HookedModel
from bridge.kernel.ownership import unwrap
from bridge.kernel.plugins import get_registry

M = TypeVar("M", bound=HookedModel)


def load(
    name_or_path: str | os.PathLike,
    *,
    adapter: type[Adapter] | None = None,
    tokenizer: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
    model_class: type[M] = HookedModel,  # type: ignore[assignment]
    default_prepend_bos: bool | None = None,
    **hf_kwargs: Any,
) -> M:
    """Load an HF model (a directory, or a hub name found in the HF cache) and wrap it in ``model_class``.

    The adapter is ``adapter=`` if given, else the one an installed plugin registered for
    the config's architecture or ``model_type``. Model repository code never runs unless
    ``trust_remote_code=True``; safetensors weights are preferred. ``tokenizer=False``
    skips loading a tokenizer; image models get their image processor (``AutoImageProcessor``) instead of
    or as well as a tokenizer, and vision-language models their processor (``AutoProcessor``: text and images
    together). Further keyword arguments go to ``from_pretrained``.

    ``device_map`` (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict of module name → device, ``"cpu"``
    or ``"disk"``), ``max_memory`` (device → bytes or ``"2GiB"``) and ``offload_folder`` (where ``"disk"``
    modules' weights go) spread the model over devices and offload it with accelerate
    (``pip install bridge-core[scale]``); hooks then fire on the device each layer runs on.
    """
    placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
    placement = {k: v for k, v in placement.items() if v is not None}
    if placement and device_map is None:
        raise BridgeError(f"{sorted(placement)} only apply with device_map=; pass device_map='auto' or a dict too.")
    if device_map is not None and device is not None:
        raise BridgeError("pass device= (one device) or device_map= (accelerate places the layers), not both.")
    if device_map is not None:
        try:
            import accelerate  # noqa: F401
        except ImportError as exc:
            raise BridgeError(
                "device_map= needs accelerate: `pip install 'bridge-core[scale]'` (or `pip install accelerate`)."
            ) from exc
        hf_kwargs.update(placement)
    name = os.fspath(name_or_path)
    if name.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(name)):
        raise BridgeError(f"no model directory at {name!r}; give a directory saved with save_pretrained or a hub name")
    common = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        hf_config = AutoConfig.from_pretrained(name, **common)
    except (OSError, ValueError) as exc:
        if not trust_remote_code and "trust_remote_code=True" in str(exc):
            raise RemoteCodeRequiredError(
                f"{name!r} needs trust_remote_code=True: its config is defined by Python code in the repository "
                "(config.json's `auto_map`), and bridge runs such code only when you pass trust_remote_code=True "
                f"to bridge.load (CLI: --trust-remote-code). Do so only if you trust that code. (HF: {exc})"
            ) from exc
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "it is neither a local directory nor in the local HF cache (HF_HUB_OFFLINE=1 is set)"
            if offline
            else "check the directory or hub name (offline, set HF_HUB_OFFLINE=1 and populate the HF cache)"
        )
        raise BridgeError(f"cannot read the config of {name!r}: {hint}. ({type(exc).__name__}: {exc})") from exc
    registry = get_registry()
    adapter_cls = adapter or registry.resolve(hf_config)
    hf_class = adapter_cls(hf_config).model_class()
    hf_model = hf_class.from_pretrained(name, config=hf_config, dtype=dtype, **common, **hf_kwargs)
    hf_model.eval()
    if device is not None:
        hf_model.to(device)
    image_processor = None
    if "image" in adapter_cls.modalities:
        try:
            image_processor = AutoImageProcessor.from_pretrained(name, **common)
        except (OSError, ValueError, TypeError, ImportError) as exc:  # ImportError: a backend it needs is missing
            warnings.warn(f"bridge: no image processor loaded for {name!r} ({exc}); pass pixel values", stacklevel=2)
    processor = None
    if {"text", "image"} <= set(adapter_cls.modalities) and adapter_cls.output_fields is None:
        try:  # a vision-language model's processor puts the image tokens into the text
            processor = AutoProcessor.from_pretrained(name, **common)
            if not isinstance(processor, ProcessorMixin):  # AutoProcessor falls back to a tokenizer alone
                processor = None
        except (OSError, ValueError, TypeError, AttributeError, KeyError, ImportError) as exc:
            # none saved, an incomplete one, or one whose video processor needs torchvision (Qwen-VL's)
            warnings.warn(
                f"bridge: no processor loaded for {name!r} ({exc}); pass tokens holding the image tokens", stacklevel=2
            )
    if tokenizer is None and "text" in adapter_cls.modalities:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, **common)
        except (OSError, ValueError, TypeError) as exc:
            warnings.warn(f"bridge: no tokenizer loaded for {name!r} ({exc}); pass tokens instead", stacklevel=2)
            tokenizer = None
    return wrap(
        hf_model,
        tokenizer or None,
        adapter=adapter_cls,
        image_processor=image_processor,
        processor=processor,
        model_class=model_class,
        default_prepend_bos=default_prepend_bos,
    )


def wrap(
    hf_model: nn.Module,
    tokenizer: Any = None,
    *,
    adapter: type[Adapter] | None = None,
    replace: bool = False,
    image_processor: Any = None,
    processor: Any = None,
    model_class: type[M] = HookedModel,  # type: ignore[assignment]
    default_prepend_bos: bool | None = None,
) -> M:
    """Bridge an HF model you already loaded. The model is changed only while hooks are in use;
    ``bridge.detach()`` (or ``bridge.unwrap(hf_model)``) gives it back untouched.

    A model has at most one bridge: wrapping it again raises, unless ``replace=True``, which first
    detaches the bridge it had. ``image_processor`` turns images into pixel values for image models;
    ``processor`` turns text and images together into a vision-language model's inputs.
    A model accelerate dispatched (``from_pretrained(device_map=...)``, ``dispatch_model``, ``cpu_offload``,
    ``disk_offload``) keeps its placement: inputs go to its input embedding's device, and tensors hooks
    return are moved to the device of the activation they replace."""
    if replace:
        unwrap(hf_model)
    registry = get_registry()
    adapter_cls = adapter or registry.resolve(hf_model.config, class_name=type(hf_model).__name__)
    instance = adapter_cls(hf_model.config)
    cfg = instance.bridge_config()
    parameter = next(hf_model.parameters(), None)
    if parameter is not None:
        cfg.dtype, cfg.device = parameter.dtype, str(parameter.device)
    if is_dispatched(hf_model):  # parameters may sit on "meta" (offloaded): inputs go where the embedding runs
        cfg.device = str(input_device(hf_model))
    cfg.architecture = type(hf_model).__name__
    if default_prepend_bos is not None:
        cfg.default_prepend_bos = default_prepend_bos
    registry.call_hook("configure", config=cfg, hf_config=hf_model.config)  # raises PluginHookError
    bridge = model_class(hf_model, instance, cfg, tokenizer, image_processor, processor)
    try:
        registry.call_hook("bridge_ready", bridge=bridge)
    except BaseException:
        bridge.detach()
        raise
    return bridge
