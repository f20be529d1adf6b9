"""``bridge harvest`` over several processes (gloo on CPU): the same files, byte for byte, as one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import bridge

MODEL = Path(__file__).resolve().parents[1] / "examples" / "models" / "induction-2l"
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
HOOKS = "blocks.0.hook_resid_post,blocks.1.attn.hook_pattern"
pytestmark = pytest.mark.slow  # several processes, each importing torch and transformers


def clean_env() -> dict[str, str]:
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "BRIDGE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(launcher)} | {"OMP_NUM_THREADS": "1"}


def harvest_args(corpus: Path, out: Path, max_tokens: int) -> list[str]:
    return [
        "harvest",
        str(MODEL),
        "--data",
        str(corpus),
        "--hooks",
        HOOKS,
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--context-length",
        "16",
        "--max-tokens",
        str(max_tokens),
        "--rows-per-shard",
        "4",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = [json.dumps({"text": " ".join(f"t{(i * j + 3) % 50}" for j in range(5 + i % 13))}) for i in range(60)]
    path.write_text("\n".join(lines))
    return path


def one_process(corpus: Path, out: Path, max_tokens: int) -> None:
    """The same harvest in this process (no launcher variables here), as the CLI would run it."""
    assert "WORLD_SIZE" not in os.environ
    options = {"batch_size": 2, "context_length": 16, "rows_per_shard": 4, "progress": False}
    bridge.harvest(MODEL, data=corpus, hooks=HOOKS, out=out, max_tokens=max_tokens, **options)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_harvest_equals_one_process_file_for_file(corpus, tmp_path):
    one_process(corpus, tmp_path / "one", 16 * 22)
    launcher = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "bridge"]
    multi = subprocess.run(
        [*launcher, *harvest_args(corpus, tmp_path / "two", 16 * 22)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert multi.returncode == 0, multi.stderr
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(one) == 7  # 6 shards (5 × 4 rows + 2) and the index; odd, so the ranks hold 3 shards each
    assert list(two) == list(one)
    for name in one:
        assert two[name] == one[name], name
    acts = bridge.harvest.open(tmp_path / "two")
    assert len(acts) == 22 and acts.index["complete"]


def test_any_launcher_setting_the_environment_and_resume_after_a_lost_rank(corpus, tmp_path):
    """Two plain processes with torch.distributed's variables set by hand; then an interrupted multi-process
    harvest (one rank's part never merged, a shard file written but not entered) resumes in one process."""
    port = str(free_port())
    out = tmp_path / "two"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bridge", *harvest_args(corpus, out, 16 * 13)],
            env=clean_env() | {"RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    whole = files(out)
    assert len(whole) == 5  # 4 shards (4+4+4+1 rows) and the index

    index = json.loads(whole["index.json"])  # as if rank 1 had committed shard 1 only in its part, and 3 not at all
    part = {**index, "complete": False, "shards": {"1": index["shards"]["1"]}, "n_shards": 4}
    index["shards"] = {"0": index["shards"]["0"], "2": index["shards"]["2"]}
    index["complete"], index["n_rows"] = False, None
    (out / "index.json").write_text(json.dumps(index, indent=1))
    (out / "index.rank-00001.json").write_text(json.dumps(part, indent=1))
    one_process(corpus, out, 16 * 13)
    assert files(out) == whole
