"""``bridge harvest`` as a user runs it: a subprocess on the shipped model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import bridge

BRIDGE = str(Path(sys.executable).parent / "bridge")
MODEL = Path(__file__).resolve().parents[1] / "examples" / "models" / "induction-2l"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([BRIDGE, "harvest", *args], env=env, capture_output=True, text=True, timeout=300)


def test_harvest_writes_resumes_and_refuses(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": " ".join(f"t{(i * j) % 50}" for j in range(9))}) for i in range(30)]
    corpus.write_text("\n".join(lines))
    out = tmp_path / "acts"
    args = [str(MODEL), "--data", str(corpus), "--hooks", "blocks.0.hook_resid_post,blocks.1.attn.hook_pattern"]
    args += ["--out", str(out), "--batch-size", "2", "--context-length", "16", "--max-tokens", "96"]
    args += ["--rows-per-shard", "4", "--dtype", "float16"]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "6 rows of 16 tokens" in result.stdout
    assert "tok/s" in result.stderr  # the progress bar
    acts = bridge.harvest.open(out)
    assert len(acts) == 6 and acts.index["dtype"] == "float16"
    model = bridge.load(MODEL)
    tokens = acts.to_torch()["tokens"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in acts.hooks)
    for name in acts.hooks:
        torch.testing.assert_close(acts.to_torch(name), cache[name].half())
    shard = (out / "shard-00000.safetensors").read_bytes()
    again = run(*args, "--quiet")  # already complete: nothing is rewritten
    assert again.returncode == 0 and (out / "shard-00000.safetensors").read_bytes() == shard
    other = run(*[a if a != "16" else "8" for a in args])
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.startswith("bridge harvest: error:") and "differ in: context_length" in other.stderr
