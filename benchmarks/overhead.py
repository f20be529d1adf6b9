"""Overhead of the bridge against the bare HF model, in one process, on the same weights.

Every installed plugin contributes models through its ``bench_configs`` hook. For each,
prints the median time of each mode over interleaved runs and its ratio to the bare HF forward.
Targets: no hooks ≤ 1.03×, residual-only cache ≤ 1.05×, cache everything ≤ 1.25×. Image encoders
run on their adapter's example pixel values (``--image-batch`` images) and return their first return type;
vision-language models on their adapter's example inputs (text and ``--image-batch`` images), returning logits.
"Cache everything" leaves out opt-in hooks; "+ opt-in" enables and caches them too (no target).
Then greedy generation: tokens/s of ``Bridge.generate`` against HF ``generate`` on the same
weights, with no hooks and with a no-op hook on the middle block's ``hook_resid_post``,
printed as bridge/HF ratios (target ≥ 0.95; ``--gen-tokens 0`` skips it).
Encoder-decoders read ``--pos`` tokens in the encoder and half as many in the decoder; a speech-to-text model
(Whisper) reads its adapter's example audio features in the encoder instead.
Then harvesting: tokens/s of ``bridge.harvest`` (every block's ``hook_resid_post``, written as safetensors
shards) against a bare HF loop over the same batches returning ``hidden_states`` from the base model
(no LM head, which the harvest skips too), target ≥ 0.9 (``--harvest-batches 0`` skips it).

    make bench                                   # every model
    .venv/bin/python benchmarks/overhead.py --only gpt2 --reps 15
    .venv/bin/python benchmarks/overhead.py --threads 1 --cpu-time --gen-tokens 32 --gen-prompt 16
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

import bridge
from bridge.kernel.hooked_model import decoder_start_token_id
from bridge.kernel.plugins import get_registry
from bridge.testing import examples_of

TARGETS = {"no hooks": 1.03, "cache resid_post": 1.05, "cache everything": 1.25}
GENERATE_TARGET = 0.95  # bridge tokens/s over HF tokens/s
HARVEST_TARGET = 0.9  # harvest tokens/s over a bare HF hidden_states loop


def plugin_configs() -> dict[str, object]:
    """Label → HF config from every loaded plugin's ``bench_configs`` hook."""
    return get_registry().bench_configs()


def twin_models(hf_config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two HF models with identical weights: one stays bare, one gets bridged."""
    cls = getattr(transformers, hf_config.architectures[0])
    torch.manual_seed(0)
    bare = cls(hf_config).eval()
    twin = cls(hf_config).eval()
    twin.load_state_dict(bare.state_dict())
    return bare, twin


CLOCK: Callable[[], float] = time.perf_counter  # --cpu-time: time.process_time


def measure(modes: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds per mode; modes run interleaved so drift hits all of them alike."""
    for fn in modes.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(reps):
        for name, fn in modes.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def image_inputs(model: bridge.Bridge, hf_config, batch: int) -> dict | None:
    """The adapter's example inputs (pixel values…) for models that do not read tokens alone, else None."""
    example = examples_of(type(model.adapter)).example_input(hf_config, batch, seed=0)
    return None if example is None else dict(example.inputs)


def reads_audio(model: bridge.Bridge) -> bool:
    """A speech-to-text model (Whisper): its encoder reads audio features, its decoder tokens."""
    return "audio" in model.adapter.modalities and model.adapter.output_fields is None


def audio_features(model: bridge.Bridge, hf_config, batch: int) -> torch.Tensor:
    """The adapter's example audio input for ``batch`` examples (Whisper: log-mel features ``[b, mels, frames]``)."""
    example = examples_of(type(model.adapter)).example_input(hf_config, batch, seed=0)
    return example.inputs[model.adapter.audio_input]


def bench_model(hf_config, batch: int, pos: int, reps: int, image_batch: int = 8) -> dict[str, float]:
    bare, twin = twin_models(hf_config)
    model = bridge.wrap(twin)
    reads_examples = model.adapter.output_fields is not None or "image" in model.adapter.modalities
    inputs = image_inputs(model, hf_config, image_batch) if reads_examples else None
    if inputs is not None:  # image and audio models: the adapter's first return type (VLMs: logits) against HF's
        fields = model.adapter.output_fields
        return_type = next(iter(fields)) if fields else "logits"
        resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
        bare_kwargs = {} if fields else {"use_cache": False}
        modes = {
            "bare HF": lambda: bare(**inputs, **bare_kwargs),
            "no hooks": lambda: model(inputs, return_type=return_type),
            "cache resid_post": lambda: model.run_with_cache(inputs, names_filter=resid, return_type=return_type),
            "cache everything": lambda: model.run_with_cache(inputs, return_type=return_type),
        }
        medians = measure(modes, reps)
        model.detach()
        return medians
    generator = torch.Generator().manual_seed(0)
    tokens: Any = torch.randint(0, hf_config.vocab_size, (batch, pos), generator=generator)
    bare_kwargs: dict = {"use_cache": False}
    bridge_kwargs: dict = {}
    if getattr(hf_config, "is_encoder_decoder", False):  # the decoder reads half as many tokens as the encoder
        decoder = tokens[:, : pos // 2]
        bare_kwargs["decoder_input_ids"] = bridge_kwargs["decoder_input"] = decoder
    if reads_audio(model):  # speech-to-text: the encoder reads the example's audio features
        tokens = audio_features(model, hf_config, batch)
    if "position_ids" in inspect.signature(bare.forward).parameters:
        bare_kwargs["position_ids"] = torch.arange(pos).expand(batch, pos)  # as the bridge passes them
    resid = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    bare_input = {model.adapter.audio_input if reads_audio(model) else "input_ids": tokens}
    modes = {
        "bare HF": lambda: bare(**bare_input, **bare_kwargs).logits,
        "no hooks": lambda: model(tokens, **bridge_kwargs),
        "cache resid_post": lambda: model.run_with_cache(tokens, names_filter=resid, **bridge_kwargs),
        "cache everything": lambda: model.run_with_cache(tokens, **bridge_kwargs),
    }
    opt_ins = sorted({name.rsplit(".", 1)[-1] for name, point in model.hook_dict.items() if point.opt_in})
    if opt_ins:

        def with_opt_ins() -> None:
            for suffix in opt_ins:
                model.set_opt_in(suffix, True)
            try:
                model.run_with_cache(tokens, **bridge_kwargs)
            finally:
                for suffix in opt_ins:
                    model.set_opt_in(suffix, False)

        modes[f"+ opt-in ({', '.join(opt_ins)})"] = with_opt_ins
    medians = measure(modes, reps)
    model.detach()  # gives the shared config back its attention implementation
    return medians


def report(label: str, medians: dict[str, float]) -> None:
    base = medians["bare HF"]
    print(label)
    for name, seconds in medians.items():
        ratio = seconds / base
        target = TARGETS.get(name)
        verdict = "" if target is None else f"  (target ≤ {target:.2f}: {'ok' if ratio <= target else 'MISSED'})"
        print(f"  {name:<34} {seconds * 1e3:8.2f} ms  {ratio:5.3f}x{verdict}", flush=True)
    print()


def bench_generate(hf_config, batch: int, prompt: int, new_tokens: int, reps: int) -> dict[str, float]:
    """Median seconds of greedy generation of ``new_tokens`` tokens (EOS off, KV cache on) per mode."""
    bare, twin = twin_models(hf_config)
    model = bridge.wrap(twin)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, hf_config.get_text_config().vocab_size, (batch, prompt), generator=generator)
    images = image_inputs(model, hf_config, batch) if "image" in model.adapter.modalities else None
    if images is not None:  # a vision-language model: its example prompt with images
        tokens, images = images.pop("input_ids"), images
    mask = torch.ones_like(tokens)
    images = images or {}
    bare_input: dict[str, Any] = {"input_ids": tokens, **images, "attention_mask": mask}
    bridge_prompt: Any = prompt_of(tokens, images)
    if reads_audio(model):  # speech-to-text: generate from the example's audio features
        bridge_prompt = audio_features(model, hf_config, batch)
        bare_input = {model.adapter.audio_input: bridge_prompt}
    # the settings Bridge.generate passes for do_sample=False, stop_at_eos=False
    start = {"decoder_start_token_id": decoder_start_token_id(hf_config)} if hf_config.is_encoder_decoder else {}
    hf_settings = transformers.GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=[],
        pad_token_id=0,
        use_cache=True,
        num_beams=1,
        **start,
    )
    kwargs = {"max_new_tokens": new_tokens, "do_sample": False, "stop_at_eos": False, "verbose": False}
    stack = "decoder." if hf_config.is_encoder_decoder else ""  # an encoder-decoder: the decoder's middle block
    middle = f"{stack}blocks.{len(getattr(model, stack[:-1]).blocks if stack else model.blocks) // 2}.hook_resid_post"

    def with_hook() -> torch.Tensor:
        return model.generate(bridge_prompt, fwd_hooks=[(middle, lambda t, hook: None)], **kwargs)

    modes = {
        "HF generate": lambda: bare.generate(**bare_input, generation_config=hf_settings),
        "bridge generate": lambda: model.generate(bridge_prompt, **kwargs),
        f"bridge generate + {middle}": with_hook,
    }
    medians = measure(modes, reps)
    model.detach()
    return medians


def prompt_of(tokens: torch.Tensor, images: dict) -> torch.Tensor | dict:
    """What ``Bridge.generate`` takes: the tokens, or with images the whole HF input dict."""
    return {"input_ids": tokens, **images} if images else tokens


def report_generate(label: str, medians: dict[str, float], n_tokens: int) -> None:
    base = medians["HF generate"]
    print(f"{label}: generate")
    for name, seconds in medians.items():
        ratio = base / seconds  # tokens/s relative to HF
        verdict = (
            ""
            if name == "HF generate"
            else f"  (target ≥ {GENERATE_TARGET:.2f}: {'ok' if ratio >= GENERATE_TARGET else 'MISSED'})"
        )
        print(f"  {name:<44} {n_tokens / seconds:9.1f} tok/s  {ratio:5.3f}x{verdict}", flush=True)
    print()


def bench_harvest(hf_config, batch: int, pos: int, n_batches: int, reps: int) -> dict[str, float]:
    """Median seconds of harvesting ``n_batches`` batches of ``batch`` rows × ``pos`` tokens, and of a bare HF
    loop over the same rows returning every layer's hidden states."""
    bare, twin = twin_models(hf_config)
    model = bridge.wrap(twin)
    generator = torch.Generator().manual_seed(0)
    rows = batch * n_batches
    docs = torch.randint(1, hf_config.vocab_size, (rows, pos), generator=generator).tolist()  # no tokenizer: no BOS
    scratch = Path(tempfile.mkdtemp(prefix="bridge-bench-harvest-"))
    runs = itertools.count()
    options = {"batch_size": batch, "context_length": pos, "max_tokens": rows * pos, "progress": False}

    def harvest() -> None:
        out = scratch / f"run-{next(runs)}"
        bridge.harvest(model, data=docs, hooks="blocks.*.hook_resid_post", out=out, **options)
        shutil.rmtree(out)

    batches = torch.tensor(docs).split(batch)  # the harvest's rows: documents of exactly `pos` tokens

    def hf_loop() -> list:
        return [bare.base_model(tokens, output_hidden_states=True, use_cache=False).hidden_states for tokens in batches]

    try:
        medians = measure({"HF hidden_states loop": hf_loop, "bridge.harvest": harvest}, reps)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.detach()
    return medians


def report_harvest(label: str, medians: dict[str, float], n_tokens: int) -> None:
    base = medians["HF hidden_states loop"]
    print(f"{label}: harvest")
    for name, seconds in medians.items():
        ratio = base / seconds
        verdict = (
            ""
            if name == "HF hidden_states loop"
            else f"  (target ≥ {HARVEST_TARGET:.2f}: " + ("ok)" if ratio >= HARVEST_TARGET else "MISSED)")
        )
        print(f"  {name:<44} {n_tokens / seconds:9.1f} tok/s  {ratio:5.3f}x{verdict}", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="interleaved runs per mode (median taken)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--image-batch", type=int, default=8, help="images per batch for image encoders")
    parser.add_argument("--only", default="", help="run only models whose label contains this text")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--gen-tokens", type=int, default=32, help="new tokens per generate call (0: skip generate)")
    parser.add_argument("--gen-prompt", type=int, default=16, help="prompt length for generate")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time with this process's CPU time (steadier on a busy machine)"
    )
    parser.add_argument("--harvest-batches", type=int, default=16, help="batches per harvest run (0: skip harvest)")
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}, batch {args.batch} x {args.pos}, fp32, "
        f"median of {args.reps} interleaved runs{', CPU time' if args.cpu_time else ''}\n"
    )
    for label, hf_config in plugin_configs().items():
        if args.only in label:
            report(label, bench_model(hf_config, args.batch, args.pos, args.reps, args.image_batch))
            if args.gen_tokens and getattr(transformers, hf_config.architectures[0]).can_generate():
                medians = bench_generate(hf_config, args.batch, args.gen_prompt, args.gen_tokens, args.reps)
                report_generate(label, medians, args.batch * args.gen_tokens)
            text_only = getattr(hf_config, "vocab_size", None) is not None and not hasattr(hf_config, "vision_config")
            if args.harvest_batches and text_only and not hf_config.is_encoder_decoder:  # one stack of token blocks
                medians = bench_harvest(hf_config, args.batch, args.pos, args.harvest_batches, args.reps)
                report_harvest(label, medians, args.batch * args.pos * args.harvest_batches)


if __name__ == "__main__":
    main()
