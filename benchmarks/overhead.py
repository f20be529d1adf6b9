"""Overhead of the bridge against the bare HF model, in one process, on the same weights.

Every installed plugin contributes models through ``<package>.bench.bench_configs()``. For each,
prints the median time of each mode over interleaved runs and its ratio to the bare HF forward.
Targets: no hooks ≤ 1.03×, residual-only cache ≤ 1.05×, cache everything ≤ 1.25×.
"Cache everything" leaves out opt-in hooks; "+ opt-in" enables and caches them too (no target).

    make bench                                   # every model
    .venv/bin/python benchmarks/overhead.py --only gpt2 --reps 15
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import transformers

import bridge
from bridge.plugins import get_registry

TARGETS = {"no hooks": 1.03, "cache resid_post": 1.05, "cache everything": 1.25}


def plugin_configs() -> dict[str, object]:
    """Label → HF config from every loaded plugin that ships a ``bench`` module."""
    configs: dict[str, object] = {}
    for info in get_registry().plugins:
        if info.status != "loaded" or not info.adapters:
            continue
        package = info.adapters[0].__module__.split(".")[0]
        try:
            module = importlib.import_module(f"{package}.bench")
        except ModuleNotFoundError:
            continue
        configs.update(module.bench_configs())
    return configs


def twin_models(hf_config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two HF models with identical weights: one stays bare, one gets bridged."""
    cls = getattr(transformers, hf_config.architectures[0])
    torch.manual_seed(0)
    bare = cls(hf_config).eval()
    twin = cls(hf_config).eval()
    twin.load_state_dict(bare.state_dict())
    return bare, twin


def measure(modes: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds per mode; modes run interleaved so drift hits all of them alike."""
    for fn in modes.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(reps):
        for name, fn in modes.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_model(hf_config, batch: int, pos: int, reps: int) -> dict[str, float]:
    bare, twin = twin_models(hf_config)
    model = bridge.wrap(twin)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, hf_config.vocab_size, (batch, pos), generator=generator)
    bare_kwargs = {"use_cache": False}
    if "position_ids" in inspect.signature(bare.forward).parameters:
        bare_kwargs["position_ids"] = torch.arange(pos).expand(batch, pos)  # as the bridge passes them
    modes = {
        "bare HF": lambda: bare(tokens, **bare_kwargs).logits,
        "no hooks": lambda: model(tokens),
        "cache resid_post": lambda: model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post")),
        "cache everything": lambda: model.run_with_cache(tokens),
    }
    opt_ins = sorted({name.rsplit(".", 1)[-1] for name, point in model.hook_dict.items() if point.opt_in})
    if opt_ins:

        def with_opt_ins() -> None:
            for suffix in opt_ins:
                model.set_opt_in(suffix, True)
            try:
                model.run_with_cache(tokens)
            finally:
                for suffix in opt_ins:
                    model.set_opt_in(suffix, False)

        modes[f"+ opt-in ({', '.join(opt_ins)})"] = with_opt_ins
    return measure(modes, reps)


def report(label: str, medians: dict[str, float]) -> None:
    base = medians["bare HF"]
    print(label)
    for name, seconds in medians.items():
        ratio = seconds / base
        target = TARGETS.get(name)
        verdict = "" if target is None else f"  (target ≤ {target:.2f}: {'ok' if ratio <= target else 'MISSED'})"
        print(f"  {name:<34} {seconds * 1e3:8.2f} ms  {ratio:5.3f}x{verdict}", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="interleaved runs per mode (median taken)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--only", default="", help="run only models whose label contains this text")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}, batch {args.batch} x {args.pos}, fp32, "
        f"median of {args.reps} interleaved runs\n"
    )
    for label, hf_config in plugin_configs().items():
        if args.only in label:
            report(label, bench_model(hf_config, args.batch, args.pos, args.reps))


if __name__ == "__main__":
    main()
