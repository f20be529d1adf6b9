"""Plant known bugs one at a time and report which tests catch each (``make mutate``; not part of ``make test``).

    python tools/mutate.py                      # the kit's conformance tests on GPT-2, NeoX and Llama
    python tools/mutate.py -- bridge_gpt2/tests  # any pytest arguments after ``--``
    python tools/mutate.py --only ln-eps-dropped

Each mutation is a text replacement in one source file, undone afterwards (also on Ctrl-C). A mutation
no test catches is a hole in the suite; the script exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = [
    "bridge_gpt2/tests/test_gpt2_conformance.py",
    "bridge_llama/tests/test_llama_conformance.py",
    "-k",
    "GPT2LMHeadModel or GPTNeoXForCausalLM or LlamaForCausalLM",
]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str


MUTATIONS = [
    Mutation(
        "resid-mid-patch-misses-mlp",
        "core/src/bridge/components/blocks.py",
        "mlp_out = self.hook_mlp_out(self._mlp(resid_mid))",
        "mlp_out = self.hook_mlp_out(self._mlp(attn_out + resid_pre))",
    ),
    Mutation(
        "incl-bwd-twice-the-gradient",
        "core/src/bridge/model.py",
        'store[f"{hook.name}_grad"] = kept if device is None else kept.to(device)',
        'store[f"{hook.name}_grad"] = 2 * kept if device is None else kept.to(device)',
    ),
    Mutation(
        "masked-loss-counts-targets-after-padding",
        "core/src/bridge/loss.py",
        "valid = (attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()).to(nll.dtype)",
        "valid = attention_mask[:, :-1].bool().to(nll.dtype)",
    ),
    Mutation(
        "pattern-hook-return-ignored",
        "core/src/bridge/seam.py",
        "pattern = on_pattern(pattern)",
        "on_pattern(pattern)",
    ),
    Mutation(
        "scores-hook-return-ignored",
        "core/src/bridge/seam.py",
        "scores = on_scores(scores)",
        "on_scores(scores)",
    ),
    Mutation(
        "ln-eps-dropped",
        "core/src/bridge/components/norm.py",
        "rstd = torch.rsqrt(mean_square + self.eps)",
        "rstd = torch.rsqrt(mean_square)",
    ),
    Mutation(
        "neox-per-head-qkv-misread",
        "core/src/bridge/components/attention.py",
        'q, k, v = einops.rearrange(fused, "b p (h three d) -> three b p h d", three=3, h=h)',
        'q, k, v = einops.rearrange(fused, "b p (three h d) -> three b p h d", three=3, h=h)',
    ),
    Mutation(
        "rotary-forgotten",
        "bridge_llama/src/bridge_llama/adapters.py",
        'LLAMA_ATTN = {"qkv": SplitQKV(), "out": "o_proj", "rotary": True}',
        'LLAMA_ATTN = {"qkv": SplitQKV(), "out": "o_proj", "rotary": False}',
    ),
    Mutation(
        "pos-embed-left-out",
        "bridge_gpt2/src/bridge_gpt2/adapters.py",
        'pos_embed="wpe",',
        "pos_embed=None,",
    ),
    Mutation(
        "mlp-hooks-on-flattened-positions",
        "core/src/bridge/components/mlp.py",
        "self.attach(OutputTap(hf_module.get_submodule(pre), self.hook_pre, (self.hook_pre,)))",
        "self.attach(OutputTap(hf_module.get_submodule(pre), "
        "lambda y: self.hook_pre(y.flatten(0, -2)).view_as(y), (self.hook_pre,)))",
    ),
]


def failing_tests(pytest_args: list[str]) -> tuple[list[str], str]:
    """The ids of the tests that fail (or error) under ``pytest_args``, and pytest's summary line."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *pytest_args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    return failed, summary


def by_check(test_ids: list[str]) -> dict[str, int]:
    """How many failing cases per check (the part of the id naming a ``check_…``), else per test."""
    names = [next(iter(re.findall(r"check_\w+", t)), t.split("::")[-1].split("[")[0]) for t in test_ids]
    return dict(Counter(names).most_common())


def run(mutation: Mutation, pytest_args: list[str]) -> list[str]:
    path = ROOT / mutation.path
    source = path.read_text()
    if source.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the text to replace occurs {source.count(mutation.old)} times in {path}")
    path.write_text(source.replace(mutation.old, mutation.new))
    try:
        failed, summary = failing_tests(pytest_args)
    finally:
        path.write_text(source)
    verdict = f"caught by {len(failed)} tests: {by_check(failed)}" if failed else "NOT CAUGHT"
    print(f"{mutation.name}: {verdict}  [{summary}]", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments (after --); default: the kit subset")
    args = parser.parse_args()
    pytest_args = args.pytest_args or DEFAULT_TESTS
    failed, summary = failing_tests(pytest_args)
    if failed:
        raise SystemExit(f"the unmutated code already fails {len(failed)} tests ({summary}); fix those first")
    print(f"baseline: {summary}", flush=True)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    missed = [m.name for m in chosen if not run(m, pytest_args)]
    print(f"{len(chosen) - len(missed)} of {len(chosen)} mutations caught" + (f"; missed: {missed}" if missed else ""))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
