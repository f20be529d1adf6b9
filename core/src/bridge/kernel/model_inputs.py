"""Forward inputs beyond tokens: pixel values, images through the image processor, mappings of HF inputs.

Models whose adapter reads images (``Adapter.modalities``) take, as ``forward``'s input or ``pixel_values=``:

- pixel values: a float tensor, ``[batch, channels, height, width]`` for patch-convolution encoders;
- images (PIL images, arrays, or a list of them), turned into pixel values by the image processor loaded
  with the model (``bridge.load`` loads it as it loads a tokenizer; ``bridge.wrap(..., image_processor=)``);
- a mapping of HF forward inputs, e.g. an image processor's output (``pixel_values``, and
  ``pixel_attention_mask``/``spatial_shapes`` for SigLIP 2) or a processor's text + image output.

A two-tower model reads text and images together: the text (or tokens) as the input, the images as
``pixel_values=``. What they return is the HF output field ``Adapter.output_fields`` names per ``return_type``.

A vision-language model (modalities text and image, no ``output_fields``) is a language model: it returns
logits, loss and hidden states as one does, and takes its images beside the tokens (``LanguageImages``):
pixel values or images as ``pixel_values=``, text and images through the loaded processor (which puts the
image tokens into the text), or the processor's output as one dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from bridge.kernel.adapter import Adapter
from bridge.kernel.errors import BadInputError

TextPreparer = Callable[[Any], tuple[torch.Tensor, torch.Tensor | None]]


class _DefaultReturnType(str):
    """``forward``'s default ``return_type``: equal to ``"logits"`` (a language model's natural output), and told
    apart from an explicit ``"logits"`` so that a model without logits returns its own natural output instead."""

    __slots__ = ()

    def __reduce__(self) -> tuple:
        return _default_return_type, ()


def _default_return_type() -> Any:
    return DEFAULT_RETURN_TYPE


#: ``forward(return_type=...)``'s default (see ``ModelInputs.natural_return_type``).
DEFAULT_RETURN_TYPE: Any = _DefaultReturnType("logits")


def looks_like_images(value: Any) -> bool:
    """A PIL image, a numpy array, or a non-empty list of them."""
    if isinstance(value, list | tuple) and value:
        return all(looks_like_images(v) for v in value)
    module = type(value).__module__
    return module.startswith("PIL.") or module == "numpy"


class ModelInputs:
    """Turns a forward call's input into HF forward keyword arguments, and an HF output into ``return_type``."""

    def __init__(self, hf_model: nn.Module, adapter: Adapter) -> None:
        self.name = type(hf_model).__name__
        self.modalities = adapter.modalities
        self.fields = adapter.output_fields
        self.audio_input = adapter.audio_input
        params = inspect.signature(hf_model.forward).parameters.values()
        self.accepted = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @property
    def language_with_images(self) -> bool:
        """A vision-language model: a language model that also reads images."""
        return self.fields is None and "image" in self.modalities

    @property
    def language_with_audio(self) -> bool:
        """A speech-to-text model: an encoder reading audio, a decoder generating tokens (Whisper)."""
        return self.fields is None and "audio" in self.modalities

    @property
    def reads_mappings_as_language(self) -> bool:
        """A language model reading text only: a mapping input is its HF inputs (a tokenizer's output)."""
        return self.fields is None and "image" not in self.modalities and "audio" not in self.modalities

    def audio_language_inputs(self, input: Any) -> dict[str, Any]:
        """For a speech-to-text model: the encoder's HF inputs from ``input``, audio features (a float tensor or
        array, see ``_audio``) or a mapping of HF inputs (a feature extractor's output, with ``audio_input``; an
        encoder-decoder's ``decoder_input_ids`` may come with it)."""
        if isinstance(input, Mapping):
            inputs = dict(input)
            unknown = sorted(set(inputs) - self.accepted)
            if unknown:
                raise BadInputError(
                    f"{self.name} takes no input named {unknown}; its inputs are {sorted(self.accepted)}."
                )
            if inputs.get(self.audio_input) is None:
                raise BadInputError(
                    f"{self.name} reads audio: the mapping of HF inputs needs {self.audio_input} (the feature "
                    f"extractor's output has it), got {sorted(inputs)}."
                )
            return inputs
        if input is None:
            raise BadInputError(
                f"{self.name} reads audio: pass {self.audio_input} (a float tensor or array) as the input."
            )
        return {self.audio_input: _audio(input, self.name, self.audio_input)}

    def split_language_mapping(
        self, inputs: dict[str, Any], attention_mask: torch.Tensor | None
    ) -> tuple[Any, torch.Tensor | None, dict[str, Any]]:
        """A language model's mapping of HF inputs (a tokenizer's output, ``input_ids`` with ``attention_mask``,
        ``token_type_ids``…, or an encoder-decoder's ``decoder_input_ids``): ``(tokens, mask, other HF inputs)``."""
        if attention_mask is not None and inputs.get("attention_mask") is not None:
            raise BadInputError("the mapping of HF inputs has an attention_mask; do not pass attention_mask= as well")
        tokens, mask, extra = self._split_mapping(inputs)
        return tokens, mask if mask is not None else attention_mask, extra

    def applies(self, input: Any, pixel_values: Any) -> bool:
        """Whether this call goes through here rather than the token path of language models."""
        if self.language_with_images:
            return False
        if self.fields is None:
            if pixel_values is not None or looks_like_images(input):
                raise BadInputError(
                    f"{self.name} reads text only; pixel values and images are for image models. Pass text, a list "
                    "of texts, tokens [batch, pos] or a mapping of HF inputs with input_ids (a tokenizer's output)."
                )
            return False
        return True

    def prepare(self, input: Any, pixel_values: Any, text: TextPreparer, image_processor: Any) -> dict[str, Any]:
        """HF forward keyword arguments for ``input`` and ``pixel_values`` (see the module docstring)."""
        if isinstance(input, Mapping):
            if pixel_values is not None:
                raise BadInputError("pass the HF inputs either as one mapping or as input and pixel_values=, not both")
            inputs = dict(input)
            unknown = sorted(set(inputs) - self.accepted)
            if unknown:
                raise BadInputError(
                    f"{self.name} takes no input named {unknown}; its inputs are {sorted(self.accepted)}."
                )
        elif "audio" in self.modalities and input is not None:
            if pixel_values is not None:
                raise BadInputError(f"{self.name} reads audio, not images: pass the audio as the input.")
            inputs = {self.audio_input: _audio(input, self.name, self.audio_input)}
        else:
            if pixel_values is None and "image" in self.modalities and self._is_image(input):
                input, pixel_values = None, input
            inputs = {}
            if pixel_values is not None:
                inputs.update(self._pixels(pixel_values, image_processor))
            if input is not None:
                if "text" not in self.modalities:
                    raise BadInputError(
                        f"{self.name} reads images, not text (got a {type(input).__name__}): pass pixel values (a "
                        "float tensor [batch, channels, height, width]), images (PIL images or arrays, through the "
                        "image processor loaded with the model), or the image processor's output (a dict)."
                    )
                tokens, mask = text(input)
                inputs["input_ids"] = tokens
                if mask is not None:
                    inputs["attention_mask"] = mask
        self._check_complete(inputs)
        return inputs

    def language_inputs(
        self,
        input: Any,
        pixel_values: Any,
        attention_mask: torch.Tensor | None,
        image_processor: Any,
        processor: Any,
    ) -> tuple[Any, torch.Tensor | None, dict[str, Any]]:
        """For a vision-language model: ``(text or tokens, attention mask, further HF inputs)``.

        ``input`` may be the processor's output (a dict with ``input_ids``; ``pixel_values``, ``token_type_ids``…
        go on to HF); with text and images (``pixel_values=`` PIL images or arrays) and a loaded processor, the
        processor makes that dict (image tokens expanded in the text); pixel values (``[b, c, h, w]``, or the model's
        own layout) or images through the image processor go beside text or tokens that already hold the image
        tokens."""
        if isinstance(input, Mapping):
            if pixel_values is not None or attention_mask is not None:
                raise BadInputError(
                    "pass the HF inputs either as one mapping (the processor's output) or as input, pixel_values= "
                    "and attention_mask=, not both"
                )
            return self._split_mapping(dict(input))
        if pixel_values is None:
            return input, attention_mask, {}
        texts = isinstance(input, str) or (isinstance(input, list) and bool(input) and isinstance(input[0], str))
        if texts and looks_like_images(pixel_values) and processor is not None:
            if attention_mask is not None:
                raise BadInputError("with text and images the processor builds the attention mask; pass neither")
            encoded = processor(text=input, images=pixel_values, return_tensors="pt", padding=True)
            return self._split_mapping(dict(encoded))
        pixels = self._pixels(pixel_values, image_processor, any_layout=True)
        return input, attention_mask, {k: v for k, v in pixels.items() if k in self.accepted}

    def _split_mapping(self, inputs: dict[str, Any]) -> tuple[Any, torch.Tensor | None, dict[str, Any]]:
        unknown = sorted(set(inputs) - self.accepted)
        if unknown:
            raise BadInputError(f"{self.name} takes no input named {unknown}; its inputs are {sorted(self.accepted)}.")
        if inputs.get("input_ids") is None:
            raise BadInputError(
                f"{self.name} is a language model: the mapping of HF inputs needs input_ids (the processor's "
                f"output has them), got {sorted(inputs)}."
            )
        return inputs.pop("input_ids"), inputs.pop("attention_mask", None), inputs

    def _is_image(self, value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return value.is_floating_point() or (value.dtype == torch.uint8 and value.ndim in (3, 4))
        return looks_like_images(value)

    def _pixels(self, value: Any, image_processor: Any, any_layout: bool = False) -> dict[str, Any]:
        """``{"pixel_values": ...}`` from pixel values or images. ``any_layout``: a vision-language model's pixel
        values, whose layout is the model's (crops ``[b, n_crops, c, h, w]``, flattened patches ``[n, c·p²]``)."""
        if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim in (3, 4):
            if image_processor is None:
                raise BadInputError(
                    f"got a uint8 tensor of shape {tuple(value.shape)}: raw pixel values 0..255, which the image "
                    f"processor turns into what {self.name} reads, but none was loaded with it. Pass float pixel "
                    "values (resized and normalized as the model expects), or give an image processor "
                    "(`bridge.wrap(hf_model, image_processor=...)`)."
                )
            pictures = [image.numpy() for image in (value if value.ndim == 4 else value[None]).cpu()]  # [c, h, w]
            return dict(image_processor(images=pictures, return_tensors="pt"))
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                raise BadInputError(
                    f"pixel values must be a float tensor (or uint8 images [batch, channels, height, width] for the "
                    f"image processor), got dtype {value.dtype}"
                )
            if value.ndim != 4 and not any_layout:
                raise BadInputError(
                    f"pixel values must have shape [batch, channels, height, width], got {tuple(value.shape)}; "
                    "inputs of another layout (SigLIP 2's patches with spatial_shapes) go as a dict of HF inputs."
                )
            return {"pixel_values": value}
        if not looks_like_images(value):
            raise BadInputError(
                f"got a {type(value).__name__} as images; pass pixel values (a float tensor), PIL images or arrays."
            )
        if image_processor is None:
            raise BadInputError(
                f"no image processor was loaded with this {self.name}, so images cannot become pixel values: pass "
                "pixel values (a float tensor), or give one (`bridge.load` reads it from the model directory's "
                "preprocessor_config.json; `bridge.wrap(hf_model, image_processor=...)`)."
            )
        return dict(image_processor(images=value, return_tensors="pt"))

    def _check_complete(self, inputs: dict[str, Any]) -> None:
        pixels = inputs.get("pixel_values")
        if isinstance(pixels, torch.Tensor) and (pixels.ndim == 0 or pixels.shape[0] == 0):
            raise BadInputError(
                f"pixel values hold no image (shape {tuple(pixels.shape)}); pass at least one, "
                "[batch ≥ 1, channels, height, width]."
            )
        has_images = inputs.get("pixel_values") is not None
        has_text = inputs.get("input_ids") is not None
        if "image" in self.modalities and not has_images:
            both = "text" in self.modalities
            raise BadInputError(
                f"{self.name} reads {'text and images together' if both else 'images'}: pass "
                + ("the text (or tokens) as the input and the images as pixel_values=" if both else "pixel values")
                + " (a float tensor [batch, channels, height, width], images through the image processor, or the "
                "processor's output as a dict)."
            )
        if "text" in self.modalities and not has_text:
            raise BadInputError(
                f"{self.name} reads text and images together: pass the text (or tokens) as the input as well."
            )

    @property
    def natural_return_type(self) -> str:
        """What an image model returns by default: its ``"logits"``, else its ``"hidden"`` states, else its first
        output field."""
        fields = list(self.fields or {})
        return next((kind for kind in ("logits", "hidden") if kind in fields), fields[0] if fields else "hidden")

    def resolve_return_type(self, return_type: Any) -> Any:
        """``return_type`` checked against the output fields (the default: the natural one)."""
        if return_type is DEFAULT_RETURN_TYPE:
            return self.natural_return_type
        self.check_return_type(return_type)
        return return_type

    def check_return_type(self, return_type: Any) -> None:
        accepted = [*(self.fields or {}), None]
        if return_type not in accepted:
            raise BadInputError(f"return_type={return_type!r} is not one of {accepted} for {self.name}.")

    def select(self, out: Any, return_type: str | None) -> Any:
        """The HF output field(s) ``return_type`` names (``None``: nothing)."""
        if return_type is None:
            return None
        field = self.fields[return_type]
        return tuple(getattr(out, f) for f in field) if isinstance(field, tuple) else getattr(out, field)


def _audio(value: Any, name: str, key: str) -> torch.Tensor:
    """Audio as HF's ``key`` argument: a float tensor or a numpy array (raw samples ``[b, samples]`` or features
    ``[b, mels, frames]``; one example without its batch axis gets one)."""
    if type(value).__module__ == "numpy":
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise BadInputError(
            f"{name} reads audio: pass a float tensor or array as {key} (the feature extractor's output, or a dict "
            f"of HF inputs), got {kind}."
        )
    batched = 2 if key == "input_values" else 3
    return value.unsqueeze(0) if value.ndim == batched - 1 else value
