"""Wall time of ``bridge harvest`` in one process against ``torchrun --nproc-per-node N`` on the same corpus.

A random-weight GPT-2 (6 layers, d_model 384, the benchmark model) is saved to a temporary directory and
harvested (every block's ``hook_resid_post``) end to end, as a user runs it: process start, model load,
harvest, index. One process uses ``--threads`` intra-op threads (default: torch's own choice); each of the
N ranks uses ``cores // N``. The outputs are checked to be byte-identical.

    .venv/bin/python benchmarks/harvest_ranks.py --ranks 2 --tokens 65536
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config

from bridge.testing.fixtures import save_tiny_model


def run(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of the one process (0: torch's)")
    args = parser.parse_args()
    config = GPT2Config(
        n_layer=6, n_embd=384, n_head=6, n_positions=256, vocab_size=128, architectures=["GPT2LMHeadModel"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_tiny_model(config, root / "model")
        corpus = root / "corpus.jsonl"
        docs = [" ".join(f"w{(i * j) % 97}" for j in range(40 + i % 200)) for i in range(4000)]
        corpus.write_text("\n".join(json.dumps({"text": d}) for d in docs))
        common = ["harvest", str(root / "model"), "--data", str(corpus), "--hooks", "blocks.*.hook_resid_post"]
        common += ["--batch-size", "8", "--context-length", str(args.context_length), "--max-tokens", str(args.tokens)]
        common += ["--rows-per-shard", "32", "--quiet"]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
        single_env = env | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
        one = run([sys.executable, "-m", "bridge", *common, "--out", str(root / "one")], single_env)
        threads = max(1, (os.cpu_count() or 1) // args.ranks)
        torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", str(args.ranks)]
        many = run(
            [*torchrun, "-m", "bridge", *common, "--out", str(root / "many")], env | {"OMP_NUM_THREADS": str(threads)}
        )
        same = all((root / "many" / p.name).read_bytes() == p.read_bytes() for p in (root / "one").iterdir()) and len(
            list((root / "one").iterdir())
        ) == len(list((root / "many").iterdir()))
    print(f"threads (1 process): {args.threads or torch.get_num_threads()}, per rank: {threads}, {args.tokens} tokens")
    print(f"1 process: {one:.1f} s ({args.tokens / one:.0f} tok/s)")
    print(f"{args.ranks} ranks:   {many:.1f} s ({args.tokens / many:.0f} tok/s), speedup {one / many:.2f}x")
    print(f"outputs byte-identical: {same}")


if __name__ == "__main__":
    main()
