"""Peak memory of caching every activation, against what it must cost at least.

For each benchmark model (the plugins' ``bench_configs()``, as ``benchmarks/overhead.py``), in a fresh process
per measurement so that one run's freed-but-kept memory cannot hide the next one's:

- bare forward: the peak resident memory the bare HF forward adds (its logits kept);
- cache everything: the peak ``run_with_cache`` adds (logits and cache kept);
- cached tensors: the sum of the cache's tensor sizes (``numel × element size``).

"Peak added" is Linux's resident high-water mark (``VmHWM``) after the run, less the resident memory just
before it, with the high-water mark reset to that point (``/proc/self/clear_refs``): every byte torch
allocated and touched counts, wherever it came from. Caching adds no overhead beyond storing the
tensors when ``cache everything ≈ bare forward + cached tensors`` (the ratio is printed; the two
overlap a little since the bare forward's transient buffers are freed as the cache fills).

    .venv/bin/python benchmarks/memory.py                 # every model
    .venv/bin/python benchmarks/memory.py --only gpt2 --batch 4 --pos 256
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import warnings
from pathlib import Path

MiB = 2**20


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(label: str, mode: str, batch: int, pos: int, queue) -> None:
    """In a child process: the peak added by one run of ``mode``, and the cached bytes."""
    import torch
    import transformers

    import bridge

    sys.path.insert(0, str(Path(__file__).parent))
    from overhead import plugin_configs, twin_models

    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(False)
    hf_config = plugin_configs()[label]
    bare, twin = twin_models(hf_config)
    del twin
    model = bridge.wrap(bare) if mode == "cache everything" else None
    tokens = torch.randint(0, hf_config.vocab_size, (batch, pos), generator=torch.Generator().manual_seed(0))
    warm = tokens[:, :8]  # first calls allocate one-off state (kernels, tables): pay it before measuring
    model(warm) if model is not None else bare(warm, use_cache=False)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    if model is None:
        kept = bare(tokens, use_cache=False).logits
        cached = 0
    else:
        kept = model.run_with_cache(tokens)
        cached = sum(t.numel() * t.element_size() for t in kept[1].values())
    queue.put((_status("VmHWM") - before, cached, transformers.__version__))


def measure(label: str, mode: str, batch: int, pos: int) -> tuple[int, int]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure, args=(label, mode, batch, pos, queue))
    child.start()
    peak, cached, _ = queue.get(timeout=600)
    child.join()
    return peak, cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--only", default="", help="run only models whose label contains this text")
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        print("memory benchmark: needs Linux's /proc (VmHWM, clear_refs); skipped")
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from overhead import plugin_configs

    print(f"\npeak memory added by one forward, batch {args.batch} x {args.pos}, fp32 (MiB)")
    print(f"{'model':<28}{'bare fwd':>10}{'cached':>10}{'sum':>10}{'cache all':>11}{'ratio':>8}")
    for label, hf_config in plugin_configs().items():
        if args.only not in label or not hasattr(hf_config, "vocab_size"):
            continue
        bare, _ = measure(label, "bare forward", args.batch, args.pos)
        peak, cached = measure(label, "cache everything", args.batch, args.pos)
        expected = bare + cached
        print(
            f"{label:<28}{bare / MiB:>10.1f}{cached / MiB:>10.1f}{expected / MiB:>10.1f}"
            f"{peak / MiB:>11.1f}{peak / expected:>7.2f}x"
        )


if __name__ == "__main__":
    main()
