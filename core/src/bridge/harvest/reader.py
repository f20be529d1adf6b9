"""Reading a harvest back: ``bridge.harvest.open(dir)`` → rows of activations, memory-mapped from the shards.

    acts = bridge.harvest.open("acts/")
    len(acts)                                  # rows
    acts[3]["blocks.1.hook_resid_post"]        # [context_length, d_model]; also "tokens", "positions", "doc_ids"
    for shard in acts.shards(): ...            # dicts of [rows_in_shard, ...] tensors, one shard at a time
    acts.to_torch("blocks.1.hook_resid_post")  # [rows, context_length, d_model]

It is a map-style dataset (``__len__``/``__getitem__``), so ``torch.utils.data.DataLoader`` batches it.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from bridge.harvest.layout import ROW_FIELDS, HarvestError, check_checksum, check_files, read_index


class HarvestedActivations:
    """The rows of a harvest directory (its completed shards, in row order)."""

    def __init__(self, directory: str | os.PathLike, verify: bool = True) -> None:
        self.directory = Path(directory)
        if not (self.directory / "index.json").exists():
            raise HarvestError(f"{str(self.directory)!r} has no index.json: it is not a harvest directory.")
        self.index = read_index(self.directory)
        check_files(self.directory, self.index, leftovers_ok=True)  # sizes and headers (row ranges): cheap
        #: Check each shard's checksum the first time it is read (``open(dir, verify=False)``: never).
        self.verify = verify
        self._verified: set[str] = set()
        self._shards = sorted(self.index["shards"].values(), key=lambda entry: entry["first_row"])
        self._starts: list[int] = []
        total = 0
        for entry in self._shards:
            self._starts.append(total)
            total += entry["rows"]
        self._len = total
        self._handles: dict[str, Any] = {}

    @property
    def hooks(self) -> list[str]:
        return list(self.index["hooks"])

    @property
    def complete(self) -> bool:
        """False while an interrupted harvest has shards left to write."""
        return bool(self.index["complete"])

    @property
    def shapes(self) -> dict[str, list[int]]:
        """Each hook's activation shape per row."""
        return dict(self.index["shapes"])

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        """Row ``row``: each hook's activation ``[*shape]``, ``tokens``/``positions``/``doc_ids`` ``[context_length]``,
        ``row_ids`` (the row's global index, a 0-D tensor)."""
        if not isinstance(row, int):
            raise TypeError(f"index a harvest with an int row, got {type(row).__name__}; to_torch() gives everything.")
        if not -self._len <= row < self._len:
            raise IndexError(f"row {row} is out of range for a harvest of {self._len} rows.")
        row %= self._len
        position = bisect.bisect_right(self._starts, row) - 1
        handle = self._handle(self._shards[position]["file"])
        local = row - self._starts[position]
        return {name: handle.get_slice(name)[local] for name in [*self.hooks, *ROW_FIELDS]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for shard in self.shards():
            rows = len(shard["row_ids"])
            for i in range(rows):
                yield {name: tensor[i] for name, tensor in shard.items()}

    def shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """One dict per shard, in row order: each hook ``[rows, *shape]`` and the row fields."""
        for entry in self._shards:
            handle = self._handle(entry["file"])
            yield {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)

    def to_torch(self, hook: str | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """Every row at once: one hook's ``[rows, *shape]`` tensor, or a dict of all hooks and row fields."""
        if hook is not None and hook not in self.hooks:
            raise HarvestError(f"{hook!r} was not harvested here; the hooks are {self.hooks}.")
        names = [hook] if hook is not None else [*self.hooks, *ROW_FIELDS]
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for entry in self._shards:
            handle = self._handle(entry["file"])
            for name in names:
                parts[name].append(handle.get_tensor(name))
        if not self._shards:
            raise HarvestError(f"{str(self.directory)!r} has no completed shard yet.")
        tensors = {name: torch.cat(chunks) for name, chunks in parts.items()}
        return tensors[hook] if hook is not None else tensors

    def _handle(self, file: str) -> Any:
        if file not in self._handles:
            path = self.directory / file
            if self.verify and file not in self._verified:
                check_checksum(path, next(e for e in self._shards if e["file"] == file))
                self._verified.add(file)
            self._handles[file] = safe_open(str(path), framework="pt")
        return self._handles[file]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the open shard files (a ``DataLoader`` worker opens its own)."""
        return {**self.__dict__, "_handles": {}}

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"HarvestedActivations({str(self.directory)!r}, {self._len} rows, hooks={self.hooks}, {state})"


def open_harvest(directory: str | os.PathLike, verify: bool = True) -> HarvestedActivations:
    """Read the harvest in ``directory``; each shard's checksum is checked the first time it is read, unless
    ``verify=False``."""
    return HarvestedActivations(directory, verify)


__all__ = ["HarvestedActivations", "open_harvest"]
