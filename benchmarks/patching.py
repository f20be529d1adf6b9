"""Activation-patching sweeps: ``bridge.patching`` against TransformerLens's own helpers, on the same weights.

The sweep is TransformerLens's ``get_act_patch_attn_head_out_by_pos`` (every head at every position: one forward
pass per patch there). Timed, each once after a warm-up, on one process:

- TransformerLens 4.3's helper on TransformerLens's ``TransformerBridge`` of the model (what its users run);
- the same helper on a ``bridge.Bridge`` of the model;
- ``bridge.patching``'s sweep, batched only (``skip=False``), and batched with passes that start at the patched
  layer and position (the default).

Prints seconds and the speed-ups, and checks that every sweep gives the same numbers (max |difference|).
Needs TransformerLens: run with the compatibility venv (``make setup-compat``)::

    .venv-compat/bin/python benchmarks/patching.py              # what `make bench` runs
    .venv-compat/bin/python benchmarks/patching.py --threads 1 --batch 1 --positions 24
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import bridge
from bridge import patching

SHIPPED = Path("examples/models")


def metric(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def random_model(directory: Path, kind: str) -> Path:
    """A 6-layer, d_model 384 model with random weights (the size `make bench` uses), with induction-2l's tokenizer."""
    torch.manual_seed(0)
    if kind == "gpt2":
        config = GPT2Config(
            n_layer=6, n_embd=384, n_head=6, n_positions=256, vocab_size=502, bos_token_id=0, eos_token_id=0
        )
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(
            num_hidden_layers=6,
            hidden_size=384,
            num_attention_heads=6,
            num_key_value_heads=6,
            intermediate_size=1024,
            max_position_embeddings=256,
            vocab_size=502,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHIPPED / "induction-2l" / name, directory / name)
    return directory


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench(label: str, directory: Path, batch: int, positions: int, with_tl_bridge: bool) -> dict[str, float]:
    from transformer_lens import patching as tl_patching
    from transformer_lens.model_bridge import TransformerBridge

    ours = bridge.load(directory, attn_implementation="eager").eval()
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(2, 500, (batch, positions), generator=generator)
    corrupted = clean.clone()
    corrupted[:, positions // 2 :] = torch.randint(2, 500, (batch, positions - positions // 2), generator=generator)
    _, cache = ours.run_with_cache(clean)
    cfg = ours.cfg
    patches = cfg.n_layers * positions * cfg.n_heads
    print(
        f"\n{label}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads; tokens [{batch}, {positions}]: "
        f"{patches} patches (get_act_patch_attn_head_out_by_pos)"
    )
    ours(corrupted)  # warm-up
    results = {}
    times = {}
    times["TL helper, TL bridge"] = None
    if with_tl_bridge:
        hf = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
        theirs = TransformerBridge.boot_transformers(
            str(directory), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(directory)
        )
        _, their_cache = theirs.run_with_cache(clean)
        theirs(corrupted)
        times["TL helper, TL bridge"], results["TL helper, TL bridge"] = timed(
            lambda: tl_patching.get_act_patch_attn_head_out_by_pos(theirs, corrupted, their_cache, metric)
        )
    times["TL helper, bridge"], results["TL helper, bridge"] = timed(
        lambda: tl_patching.get_act_patch_attn_head_out_by_pos(ours, corrupted, cache, metric)
    )
    times["bridge.patching, batched"], results["bridge.patching, batched"] = timed(
        lambda: patching.get_act_patch_attn_head_out_by_pos(ours, corrupted, cache, metric, skip=False, verbose=False)
    )
    times["bridge.patching"], results["bridge.patching"] = timed(
        lambda: patching.get_act_patch_attn_head_out_by_pos(ours, corrupted, cache, metric, verbose=False)
    )
    reference = results["TL helper, bridge"]
    for name, seconds in times.items():
        if seconds is None:
            continue
        diff = float((results[name] - reference).abs().max())
        print(f"  {name:28s} {seconds:8.2f} s   {patches / seconds:8.1f} patches/s   max |diff| {diff:.1e}")
    fast = times["bridge.patching"]
    print(
        f"  speed-up of bridge.patching: {times['TL helper, bridge'] / fast:.1f}x vs TransformerLens's helper on a "
        f"Bridge"
        + (
            f", {times['TL helper, TL bridge'] / fast:.1f}x vs it on TransformerLens's own bridge"
            if times["TL helper, TL bridge"]
            else ""
        )
        + f"; batching alone {times['TL helper, bridge'] / times['bridge.patching, batched']:.1f}x"
    )
    return {k: v for k, v in times.items() if v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--no-tl-bridge", action="store_true", help="skip TransformerLens's own bridge (slowest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"induction-2l (shipped GPT-2)": SHIPPED / "induction-2l"}
        if (SHIPPED / "induction-llama").exists():
            models["induction-llama (shipped Llama)"] = SHIPPED / "induction-llama"
        models["GPT-2 6L d384 (random)"] = random_model(Path(tmp) / "gpt2", "gpt2")
        models["Llama 6L d384 (random)"] = random_model(Path(tmp) / "llama", "llama")
        for label, directory in models.items():
            bench(label, directory, args.batch, args.positions, not args.no_tl_bridge)


if __name__ == "__main__":
    main()
