"""Generation: ``Bridge.generate`` with hooks firing on every step.

``generate`` runs the HF model's own ``generate`` (its ``GenerationConfig``, logits processors,
KV cache or SSM state) with TransformerLens's arguments and defaults. The bridge's hooks sit on
the HF modules, so every active hook fires on every forward step: once on the prompt
(``[b, p, ...]``) and once per new token (``[b, 1, ...]`` with a cache, the whole sequence without).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from bridge.kernel.cache import PlainActivationCache
from bridge.kernel.errors import BadInputError, BridgeError, NoLMHeadError, unknown_argument_error
from bridge.kernel.hooked_model import decoder_start_token_id
from bridge.kernel.validation import check_attention_mask, check_tokens, n_ctx_is_limit

if TYPE_CHECKING:
    from bridge.kernel.hook_points import HookPoint

GenerateReturnType = Literal["input", "str", "tokens", "embeds"]
#: Hooks laid out over query and key positions, the key axis last: ``[b, heads, query, key]`` (pattern, scores) or
#: ``[b, query, key]`` (a sparse-attention indexer's scores, DeepSeek-V3.2's ``hook_index_scores``).
_KEY_AXIS_HOOKS = ("hook_pattern", "hook_attn_scores", "hook_index_scores")


class FrequencyPenalty(LogitsProcessor):
    """Subtract ``penalty · count(token)`` from each token's logit, counting the real (unmasked)
    tokens of the sequence so far. HF applies custom processors before temperature, so the
    penalty is given pre-scaled by the temperature: the result is ``logits / T - penalty · count``."""

    def __init__(self, penalty: float, prompt_mask: torch.Tensor) -> None:
        self.penalty = penalty
        self.prompt_mask = prompt_mask  # [b, p]: 0 on padding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        p = self.prompt_mask.shape[1]
        weights = torch.ones_like(input_ids, dtype=scores.dtype)  # [b, p + new]
        weights[:, :p] = self.prompt_mask.to(scores.dtype)
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, weights)  # [b, vocab]
        return scores - self.penalty * counts


class _ProgressBar(BaseStreamer):
    """A tqdm bar advanced once per generated token (HF first hands over the prompt: skipped)."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total)
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if self.seen_prompt:
            self.bar.update(1)
        self.seen_prompt = True

    def end(self) -> None:
        self.bar.close()


class StepCaches(list):
    """The activations of each forward step of a generation: ``steps[0]`` is the prompt step
    (``[b, p, ...]``; with a vision-language model's image encoder and projector, run once for the prompt);
    ``steps[i]`` runs on new token ``i - 1`` and predicts new token ``i`` (0-based; ``[b, 1, ...]`` with the
    KV cache, the whole sequence so far with ``use_past_kv_cache=False``). Each is an
    ``ActivationCache``, so short keys work: ``steps[3]["resid_post", 0]``."""

    def stack(self, names: Sequence[str] | None = None) -> PlainActivationCache:
        """One cache over every position the model ran on: ``output_tokens[:, :-1]`` (``names``: only
        these hooks; default all recorded).

        Per-position hooks ``[b, pos, ...]`` are concatenated along ``pos``; attention patterns and
        scores ``[b, heads, query, key]`` (and an indexer's scores ``[b, query, key]``) along ``query``, each step's
        keys padded to the full length
        (pattern with 0, scores with the dtype's minimum, as a masked full forward holds them). Hooks
        that see every position at every step (a full forward without the cache, or ``hook_rot_k``
        at the seam with a cache) take the last step's value. The result equals
        ``run_with_cache(output_tokens[:, :-1])`` up to float error (padding positions aside).
        """
        if not self:
            raise BridgeError("no generation steps were recorded (max_new_tokens=0?)")
        first = self[0]
        return type(first)(
            {name: _stack_hook(name, [step[name] for step in self]) for name in (names or first)},
            n_layers=first.n_layers,
            model=first.model,
        )


def _stack_hook(name: str, values: list[torch.Tensor]) -> torch.Tensor:
    keyed = name.endswith(_KEY_AXIS_HOOKS)
    axis = values[0].ndim - 2 if keyed else 1  # the query axis of a keyed hook: the one before the keys
    sizes = [v.shape[axis] for v in values]
    if all(size == sizes[0] + i for i, size in enumerate(sizes)):
        return values[-1]  # every step saw the whole sequence so far
    if any(size != 1 for size in sizes[1:]):
        raise BridgeError(
            f"cannot stack {name!r}: its dimension {axis} has sizes {sizes} over the steps, neither one "
            "new position per step nor the whole sequence; index the per-step caches instead."
        )
    if not keyed:
        return torch.cat(values, dim=1)
    total = sizes[0] + len(values) - 1
    # a masked key: 0 in a pattern; in scores the dtype's minimum, or -inf where the model masks with -inf
    masked_with_inf = any(bool(torch.isneginf(v).any()) for v in values)
    fill = 0.0 if name.endswith("hook_pattern") else -torch.inf if masked_with_inf else torch.finfo(values[0].dtype).min
    padded = []
    for end, value in zip(range(sizes[0], total + 1), values, strict=True):
        # a step's keys are the latest positions (all of them, or a sliding window), ending at `end`
        left, right = end - value.shape[-1], total - end
        padded.append(torch.nn.functional.pad(value, (left, right), value=fill))
    return torch.cat(padded, dim=axis)  # [b, (heads,) p + new - 1, p + new - 1]


class Generation:
    """Mixed into ``Bridge``: ``generate``."""

    def generate(
        self,
        input: str | list[str] | torch.Tensor = "",
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        use_past_kv_cache: bool = True,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] | None = None,
        return_type: GenerateReturnType = "input",
        verbose: bool = True,
        *,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
        names_filter: Any = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: Any = None,
        **hf_generate_kwargs: Any,
    ) -> Any:
        """Sample up to ``max_new_tokens`` tokens, with every active hook firing on every step.

        ``input``: a text (→ batch of 1), a list of texts (left-padded whatever ``padding_side``
        says, BOS prepended unless ``prepend_bos=False``), tokens ``[b, p]`` (pass
        ``attention_mask`` ``[b, p]`` if they are left-padded) or embeddings ``[b, p, d_model]``.
        Greedy with ``do_sample=False`` or ``temperature=0``; otherwise samples with
        ``temperature``, ``top_k``, ``top_p`` and ``freq_penalty`` (``logits / T − penalty · count``
        of each token so far, sampling only). With ``stop_at_eos`` a sequence that produced
        ``eos_token_id`` (default the tokenizer's; an int or a list) is padded with EOS from then
        on, and generation stops once all have. The checkpoint's own generation defaults are not
        used; extra keyword arguments go to HF's ``GenerationConfig`` (e.g. ``repetition_penalty``;
        with ``return_dict_in_generate=True`` and ``output_logits=True`` HF's output object is returned).

        ``return_type``: ``"str"`` (special tokens skipped), ``"tokens"`` ``[b, p + new]``,
        ``"embeds"`` (token embeddings of the output ``[b, p + new, d_model]``) or ``"input"``:
        a str for a text or a batch-of-1 tensor of tokens, a list of str for a list of texts,
        tokens for tokens, embeddings for embeddings. For embeddings input, tokens and strings
        hold the new tokens only.

        ``fwd_hooks``: hooks active for this call only, as in ``run_with_hooks``. ``names_filter``
        (as in ``run_with_cache``): also record those activations on each step, and return
        ``(output, steps)`` where ``steps`` is a ``StepCaches`` list (``steps.stack()`` gives one
        cache over the whole sequence).

        Encoder-decoder models read ``input`` with the encoder and generate the decoder's tokens from the model's
        decoder start token: ``"tokens"`` are the decoder's (start token + new), ``"str"`` their text; the
        encoder's hooks fire on the first step only (HF keeps its output). A speech-to-text model (Whisper) reads
        audio features or a feature extractor's output as ``input`` and returns what HF's ``generate`` returns.

        Vision-language models also take ``pixel_values=`` (pixel values ``[b, c, h, w]`` beside tokens holding
        the image tokens, or images with a text through the processor) or the processor's output as ``input``;
        the images are read on the prompt step.
        """
        self._check_usable()
        _check_generate_kwargs(hf_generate_kwargs)
        if self.unembed is None:
            raise NoLMHeadError(
                f"{type(self.hf_model).__name__} has no LM head, so it cannot generate; load the *ForCausalLM class."
            )
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise BadInputError(f"max_new_tokens must be at least 1 (an int), got {max_new_tokens!r}")
        if return_type not in ("input", "str", "tokens", "embeds"):
            raise BridgeError(f"return_type must be 'input', 'str', 'tokens' or 'embeds', got {return_type!r}")
        images: dict[str, Any] = {}
        settings = dict(
            max_new_tokens=max_new_tokens,
            stop_at_eos=stop_at_eos,
            eos_token_id=eos_token_id,
            do_sample=do_sample,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            freq_penalty=freq_penalty,
            use_cache=use_past_kv_cache,
            extra=hf_generate_kwargs,
        )
        if self._inputs.language_with_audio:
            return self._generate_from_audio(
                input,
                pixel_values,
                attention_mask,
                return_type,
                fwd_hooks,
                names_filter,
                verbose,
                settings,
            )
        if self._inputs.language_with_images:
            input, attention_mask, images = self._inputs.language_inputs(
                input, pixel_values, attention_mask, self.image_processor, self.processor
            )
            images = {k: v.to(self._device()) if isinstance(v, torch.Tensor) else v for k, v in images.items()}
        elif pixel_values is not None:
            raise BadInputError(f"{type(self.hf_model).__name__} reads no images; generate from text or tokens.")
        tokens, embeds, mask, input_kind = self._generation_inputs(input, attention_mask, prepend_bos)
        self._check_generation_length((tokens if tokens is not None else embeds).shape[1], max_new_tokens)
        if return_type == "input":
            return_type = {"text": "str", "texts": "str", "tokens": "tokens", "embeds": "embeds"}[input_kind]
        if freq_penalty and tokens is None:
            raise BridgeError("freq_penalty counts tokens, so it needs text or tokens input, not embeddings")
        config, processors = self._generation_config(mask, **settings)
        steps = StepCaches()
        streamer = _ProgressBar(max_new_tokens) if verbose else None
        main_input = {"input_ids": tokens} if tokens is not None else {"inputs_embeds": embeds}
        with (
            self._running(),
            self.hooks(fwd_hooks),
            self._recording(names_filter, steps),
            _model_defaults(self.hf_model),
        ):
            output = self.hf_model.generate(
                **main_input,
                **images,
                attention_mask=mask,
                generation_config=config,
                logits_processor=processors,
                streamer=streamer,
            )
        if isinstance(output, torch.Tensor):
            result = self._generation_result(output, embeds, return_type, input_kind)
        else:
            result = output  # return_dict_in_generate=True: HF's output object, as HF returns it
        return result if names_filter is None else (result, steps)

    # ------------------------------------------------------------- helpers

    def _generate_from_audio(
        self,
        input: Any,
        pixel_values: Any,
        attention_mask: torch.Tensor | None,
        return_type: str,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], Callable]],
        names_filter: Any,
        verbose: bool,
        settings: dict[str, Any],
    ) -> Any:
        """``generate`` on a speech-to-text model: the audio (or the feature extractor's output) is read by the
        encoder on the first step; the decoder's tokens are what HF's ``generate`` returns (Whisper's: the new
        tokens, without the decoder's start token)."""
        if pixel_values is not None or attention_mask is not None:
            raise BadInputError(
                f"{type(self.hf_model).__name__} generates from audio: pass the audio features (or the feature "
                "extractor's output) as the input, without pixel_values= or attention_mask=."
            )
        if return_type == "embeds":
            raise BridgeError("return_type='embeds' is for text input; a speech model returns 'tokens' or 'str'.")
        if settings["freq_penalty"]:
            raise BridgeError("freq_penalty counts the prompt's tokens; a speech model's prompt is audio.")
        device = self._device()
        audio = self._inputs.audio_language_inputs(input)
        audio = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in audio.items()}
        batch = audio[self.adapter.audio_input].shape[0]
        mask = torch.ones(batch, 1, dtype=torch.long, device=device)
        config, processors = self._generation_config(mask, **settings)
        steps = StepCaches()
        streamer = _ProgressBar(settings["max_new_tokens"]) if verbose else None
        with (
            self._running(),
            self.hooks(fwd_hooks),
            self._recording(names_filter, steps),
            _model_defaults(self.hf_model),
        ):
            output = self.hf_model.generate(
                **audio, generation_config=config, logits_processor=processors, streamer=streamer
            )
        if isinstance(output, torch.Tensor):
            result = self._generation_result(
                output, None, "tokens" if return_type == "input" else return_type, "tokens"
            )
        else:
            result = output
        return result if names_filter is None else (result, steps)

    def _generation_inputs(
        self, input: Any, attention_mask: torch.Tensor | None, prepend_bos: bool | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, str]:
        """Tokens ``[b, p]`` or embeddings ``[b, p, d]``, the mask ``[b, p]`` and what the input was, checked as
        ``forward`` checks its input (ids in the vocabulary, a 0/1 mask of the input's shape...)."""
        device = self._device()
        if isinstance(input, str) or (isinstance(input, list) and all(isinstance(x, str) for x in input) and input):
            if attention_mask is not None:
                raise BadInputError("with text input the tokenizer builds the attention mask; pass no attention_mask")
            tokens, mask = self._tokens.encode(input, prepend_bos, "left")
            kind = "text" if isinstance(input, str) else "texts"
            return tokens.to(device), None, mask.to(device), kind
        if not isinstance(input, torch.Tensor) or input.ndim not in (1, 2, 3):
            raise BadInputError(
                "generate takes a str, a non-empty list of str, tokens [batch, pos] or embeddings "
                f"[batch, pos, d_model]; got {type(input).__name__}"
                + (f" with shape {tuple(input.shape)}" if isinstance(input, torch.Tensor) else "")
            )
        if input.ndim == 3:
            if not input.is_floating_point() or input.shape[-1] != self.cfg.d_model or input.shape[1] == 0:
                raise BadInputError(
                    f"a 3-D input is embeddings: a float tensor [batch, pos ≥ 1, {self.cfg.d_model}], got "
                    f"{input.dtype} of shape {tuple(input.shape)}; token ids are [batch, pos]."
                )
            data, kind = input, "embeds"
        else:
            data, kind = check_tokens(input, self.cfg, self._d_vocab_in()), "tokens"
        if attention_mask is None:
            mask = torch.ones(data.shape[:2], dtype=torch.long)
        else:
            mask = check_attention_mask(attention_mask, torch.empty(data.shape[:2]))
        data, mask = data.to(device), mask.to(device)
        return (None, data, mask, kind) if kind == "embeds" else (data, None, mask, kind)

    def _check_generation_length(self, prompt: int, max_new_tokens: int) -> None:
        """Refuse a generation that would run past a fixed position table (learned positions)."""
        n_ctx = self.cfg.n_ctx
        if n_ctx_is_limit(self.cfg) and prompt + max_new_tokens > n_ctx:
            raise BadInputError(
                f"{prompt} prompt positions and max_new_tokens={max_new_tokens} make {prompt + max_new_tokens} "
                f"positions, but this model's position table has n_ctx={n_ctx}; generate at most "
                f"{max(n_ctx - prompt, 0)} new tokens or shorten the prompt."
            )

    def _generation_config(
        self,
        mask: torch.Tensor,
        *,
        max_new_tokens: int,
        stop_at_eos: bool,
        eos_token_id: int | Sequence[int] | None,
        do_sample: bool,
        top_k: int | None,
        top_p: float | None,
        temperature: float,
        freq_penalty: float,
        use_cache: bool,
        extra: dict[str, Any],
    ) -> tuple[GenerationConfig, LogitsProcessorList]:
        """HF's config for TransformerLens's arguments, and the processors HF has no setting for."""
        tokenizer = self.tokenizer
        tokenizer_eos = getattr(tokenizer, "eos_token_id", None)
        if stop_at_eos:
            if eos_token_id is None:
                eos_token_id = tokenizer_eos
            if eos_token_id is None:
                raise BridgeError(
                    "stop_at_eos=True needs an end-of-sequence token: pass eos_token_id=..., give the bridge "
                    "a tokenizer with an eos_token_id, or pass stop_at_eos=False."
                )
            stop_ids = self._stop_ids(eos_token_id)
            pad_id = (
                eos_token_id
                if isinstance(eos_token_id, int)
                else next(t for t in (tokenizer_eos, stop_ids[0]) if t is not None)
            )
        else:
            stop_ids = []  # an empty list: HF's own default (a None) would be replaced by the checkpoint's
            pad_id = next((t for t in (getattr(tokenizer, "pad_token_id", None), tokenizer_eos) if t is not None), 0)
        sampling = do_sample and temperature != 0.0
        if sampling and temperature < 0:
            raise BridgeError(f"temperature must be ≥ 0 (0 means greedy), got {temperature}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise BridgeError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k <= 0:
            raise BridgeError(f"top_k must be a positive integer or None, got {top_k}")
        model_config = self.hf_model.config
        if getattr(model_config, "is_encoder_decoder", False):  # the decoder starts from the model's start token
            extra = {"decoder_start_token_id": decoder_start_token_id(model_config), **extra}
        settings = {
            "max_new_tokens": max_new_tokens,
            "do_sample": sampling,
            "temperature": temperature if sampling else None,
            "top_k": (top_k or 0) if sampling else None,  # 0: off (HF's default would be 50)
            "top_p": (top_p or 1.0) if sampling else None,
            "use_cache": use_cache,
            "num_beams": 1,
            "eos_token_id": stop_ids,
            "pad_token_id": pad_id,
        }
        config = GenerationConfig(**{**settings, **extra})
        processors = LogitsProcessorList()
        if sampling and freq_penalty:
            processors.append(FrequencyPenalty(freq_penalty * temperature, mask))
        return config, processors

    @staticmethod
    def _stop_ids(eos_token_id: Any) -> list[int]:
        """``eos_token_id`` (an id or a non-empty list of ids) as a list."""
        ids = [eos_token_id] if not isinstance(eos_token_id, list | tuple) else list(eos_token_id)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise BadInputError(
                f"eos_token_id must be a token id or a non-empty list of token ids (ints ≥ 0), got "
                f"{eos_token_id!r}; pass stop_at_eos=False to generate without stopping."
            )
        return ids

    @contextlib.contextmanager
    def _recording(self, names_filter: Any, steps: StepCaches) -> Iterator[None]:
        """While active, each forward of the HF model appends a new ``ActivationCache`` to ``steps``,
        filled with the activations ``names_filter`` selects."""
        if names_filter is None:
            yield
            return
        current: dict[str, torch.Tensor] = {}
        steps.append(self.cache_class(current, n_layers=self.cfg.n_layers, model=self))
        prompt_started = False

        def new_step(_module: torch.nn.Module, _args: Any) -> None:
            # The prompt step's cache exists from the start: what HF runs before the first forward (a
            # vision-language model's image encoder and projector) is recorded with the prompt.
            nonlocal current, prompt_started
            if not prompt_started:
                prompt_started = True
                return
            current = {}
            steps.append(self.cache_class(current, n_layers=self.cfg.n_layers, model=self))

        def save(tensor: torch.Tensor, hook: HookPoint) -> None:
            current[hook.name] = tensor.detach()

        handle = self.hf_model.register_forward_pre_hook(new_step)
        try:
            with self.hooks([(name, save) for name in self._names(names_filter)]):
                yield
        finally:
            handle.remove()

    def _generation_result(
        self, sequences: torch.Tensor, embeds: torch.Tensor | None, return_type: str, input_kind: str
    ) -> Any:
        """What ``generate`` returns for HF's output ``sequences`` (prompt + new, or new only after embeddings)."""
        if return_type == "tokens":
            return sequences
        if return_type == "embeds":
            new = self.hf_model.get_input_embeddings()(sequences)  # [b, pos, d_model]
            return new if embeds is None else torch.cat([embeds, new.to(embeds.dtype)], dim=1)
        texts = [self._tokens._require().decode(row, skip_special_tokens=True) for row in sequences.tolist()]
        single = input_kind == "text" or (input_kind != "texts" and len(texts) == 1)
        return texts[0] if single else texts


@functools.cache
def _generation_config_fields() -> frozenset[str]:
    """The settings HF's ``GenerationConfig`` has (its ``__init__`` silently keeps any other keyword)."""
    return frozenset(k for k in GenerationConfig().to_dict() if not k.startswith("_") and k != "transformers_version")


def _check_generate_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse a keyword that is neither ``generate``'s nor a ``GenerationConfig`` setting (with close matches)."""
    fields = _generation_config_fields()
    unknown = [name for name in kwargs if name not in fields]
    if unknown:
        params = inspect.signature(Generation.generate).parameters.values()
        own = [p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD]
        error = unknown_argument_error("generate", unknown[0], [*own, *fields])
        message = str(error).split(" It takes: ")[0]
        raise type(error)(
            f"{message} It takes its own arguments ({', '.join(own)}) and the settings of HF's GenerationConfig "
            "(repetition_penalty, min_new_tokens, no_repeat_ngram_size…; `GenerationConfig().to_dict()` lists them)."
        )


@contextlib.contextmanager
def _model_defaults(hf_model: torch.nn.Module) -> Iterator[None]:
    """Hide the checkpoint's ``generation_config`` defaults (HF fills every unset field from it):
    ``generate`` means exactly its arguments, as in TransformerLens."""
    saved = hf_model.generation_config
    hf_model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        hf_model.generation_config = saved
