"""The harvest-interrupt state machine (needs hypothesis): one harvest directory, interrupted and damaged in every
way a process can die, and resumed.

Rules: a run stopped after some shard (an exception or ``KeyboardInterrupt`` from ``after_shard``); a process
killed while writing a shard or the index (its temporary file left behind); killed between renaming a shard into
place and entering it in the index; a rank of a multi-process run lost before committing its shard (its entry and
file gone); a second harvest started while one runs (refused, naming the holder of the lock); reading the
directory back. Invariants: whatever is there opens, every row read equals the same row of an uninterrupted
harvest, no lock is left behind; at the end a plain resume gives the uninterrupted harvest's files byte for byte.

    check_harvest_interrupts(model)   # bounded: a few dozen short runs on a tiny corpus
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import bridge
from bridge.harvest.layout import INDEX, LOCK, HarvestError, shard_file

#: a tiny harvest: 5 shards of 2 rows of 8 tokens
OPTIONS: dict[str, Any] = {"batch_size": 2, "context_length": 8, "rows_per_shard": 2, "max_tokens": 8 * 10}
N_SHARDS = 5


class _Stop(Exception):
    pass


class HarvestInterrupts(RuleBasedStateMachine):
    """The state machine; ``make_harvest_machine`` binds it to one model and the files of its whole harvest."""

    model: Any
    hooks: str
    corpus: list[str]
    reference: dict[str, bytes]
    reference_rows: dict[str, torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="harvest-machine-"))
        self.out = self.root / "out"

    def _harvest(self, **kwargs: Any) -> Any:
        return bridge.harvest(
            self.model, data=self.corpus, hooks=self.hooks, out=self.out, progress=False, **OPTIONS, **kwargs
        )

    def _index(self) -> dict[str, Any] | None:
        path = self.out / INDEX
        return json.loads(path.read_text()) if path.exists() else None

    def _write_index(self, index: dict[str, Any]) -> None:
        (self.out / INDEX).write_text(json.dumps(index, indent=1))

    # ---------------------------------------------------------------------------- rules

    @rule(shard=st.integers(0, N_SHARDS - 1), keyboard=st.booleans())
    def run_stopped_after(self, shard: int, keyboard: bool) -> None:
        error: type[BaseException] = KeyboardInterrupt if keyboard else _Stop

        def stop(shard_id: int) -> None:
            if shard_id == shard:
                raise error

        with contextlib.suppress(KeyboardInterrupt, _Stop):
            self._harvest(after_shard=stop)

    @rule(shard=st.integers(0, N_SHARDS - 1), of_index=st.booleans(), size=st.integers(0, 64))
    def killed_while_writing(self, shard: int, of_index: bool, size: int) -> None:
        """What ``_atomic_write`` leaves when its process dies before the rename: part of a temporary file (in a
        directory that may hold nothing else yet: killed while writing the first index)."""
        name = INDEX if of_index else shard_file(shard)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f".tmp-99999-{name}").write_bytes(b"\0" * size)

    @precondition(lambda self: bool((self._index() or {}).get("shards")))
    @rule(data=st.data())
    def killed_between_shard_and_index(self, data: st.DataObject) -> None:
        """A shard renamed into place whose index entry was never written."""
        index = self._index()
        assert index is not None
        last = data.draw(st.sampled_from(sorted(index["shards"], key=int)), label="shard")
        del index["shards"][last]
        index["complete"], index["n_rows"] = False, None
        self._write_index(index)

    @precondition(lambda self: len((self._index() or {}).get("shards", {})) > 1)
    @rule(data=st.data())
    def rank_lost(self, data: st.DataObject) -> None:
        """A rank of a multi-process run died before committing its shard: entry and file gone, later ones kept."""
        index = self._index()
        assert index is not None
        lost = data.draw(st.sampled_from(sorted(index["shards"], key=int)), label="shard")
        (self.out / index["shards"].pop(lost)["file"]).unlink()
        index["complete"], index["n_rows"] = False, None
        self._write_index(index)

    @rule()
    def second_harvest_while_one_runs(self) -> None:
        refused: list[str] = []

        def second(shard_id: int) -> None:
            if not refused:
                try:
                    self._harvest()
                except HarvestError as err:
                    refused.append(str(err))
                else:
                    raise AssertionError("a second harvest into a directory being written was not refused")

        self._harvest(after_shard=second)
        if refused:
            assert "being written by process" in refused[0], refused[0]

    @rule()
    def resume(self) -> None:
        self._harvest()
        assert self.files() == self.reference

    # ------------------------------------------------------------------------ invariants

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.out.iterdir()) if not p.name.startswith(".tmp-")}

    @invariant()
    def what_is_there_reads_as_the_whole_harvest(self) -> None:
        if not self.out.exists():
            return
        assert not (self.out / LOCK).exists(), "a harvest left its lock behind"
        if self._index() is None:
            return
        acts = bridge.harvest.open(self.out)
        for shard in acts.shards():
            rows = shard["row_ids"]
            for name, expected in self.reference_rows.items():
                assert torch.equal(shard[name], expected[rows]), name

    def teardown(self) -> None:
        try:
            self.resume()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def make_harvest_machine(model: Any, hooks: str = "blocks.0.hook_resid_post") -> type[HarvestInterrupts]:
    """``HarvestInterrupts`` bound to ``model`` (a bridge; its harvests must not change it), with the files and rows
    of its uninterrupted harvest as the reference."""
    corpus = [" ".join(f"t{(7 * i + j) % 90}" for j in range(3 + i % 11)) for i in range(40)]
    root = Path(tempfile.mkdtemp(prefix="harvest-reference-"))
    try:
        whole = bridge.harvest(model, data=corpus, hooks=hooks, out=root / "out", progress=False, **OPTIONS)
        reference = {p.name: p.read_bytes() for p in sorted((root / "out").iterdir())}
        rows = whole.to_torch()
        assert len(whole) == N_SHARDS * OPTIONS["rows_per_shard"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    attributes = {"model": model, "hooks": hooks, "corpus": corpus, "reference": reference, "reference_rows": rows}
    return type("HarvestInterrupts_bound", (HarvestInterrupts,), attributes)


def check_harvest_interrupts(model: Any, max_examples: int = 12, steps: int = 8) -> None:
    """Run ``HarvestInterrupts`` on ``model``: ``max_examples`` runs of up to ``steps`` rules (derandomized)."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        make_harvest_machine(model),
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


__all__ = ["HarvestInterrupts", "check_harvest_interrupts", "make_harvest_machine"]
