"""The on-disk layout of a harvest directory: ``index.json``, shard files and their names, row fields.

Shared by the writer (``bridge.harvest.writer``) and the reader (``bridge.harvest.reader``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bridge.kernel.errors import BridgeError

FORMAT = "bridge-harvest/1"
INDEX = "index.json"
ROW_FIELDS = ("tokens", "positions", "doc_ids", "row_ids")


class HarvestError(BridgeError):
    """A harvest cannot start or continue: bad arguments, or an output directory that is not this harvest's."""


def shard_file(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.safetensors"


def shard_rows(shard_id: int, rows_per_shard: int) -> range:
    """The global row indices shard ``shard_id`` holds (the last shard may hold fewer)."""
    return range(shard_id * rows_per_shard, (shard_id + 1) * rows_per_shard)


def read_index(out: Path) -> dict[str, Any]:
    try:
        index = json.loads((out / INDEX).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HarvestError(
            f"{str(out)!r} has an unreadable {INDEX} ({err}); it is not a usable harvest. "
            "Choose another output directory (nothing there was changed)."
        ) from err
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise HarvestError(f"{str(out / INDEX)!r} is not a bridge harvest index (format {FORMAT!r}).")
    return index


def check_files(out: Path, index: dict[str, Any], leftovers_ok: bool) -> None:
    """Refuse a directory with files the harvest did not write, or completed shards missing or changed."""
    known = {INDEX} | {entry["file"] for entry in index["shards"].values()}
    ours = is_shard_file if leftovers_ok else lambda name: False  # written, not yet entered: rewritten
    unknown = sorted(
        p.name for p in out.iterdir() if p.name not in known and not ours(p.name) and not is_temporary(p.name)
    )
    if unknown:
        raise HarvestError(
            f"{str(out)!r} holds files this harvest did not write ({', '.join(unknown[:5])}"
            f"{'…' if len(unknown) > 5 else ''}); refusing to write there. Choose another output directory."
        )
    for entry in index["shards"].values():
        path = out / entry["file"]
        if not path.exists() or path.stat().st_size != entry["bytes"]:
            raise HarvestError(
                f"{str(path)!r} is missing or not the size the index records ({entry['bytes']} bytes): the "
                "harvest is corrupt. Delete the directory to start again, or choose another one."
            )


def is_shard_file(name: str) -> bool:
    return re.fullmatch(r"shard-\d{5,}\.safetensors", name) is not None


def is_temporary(name: str) -> bool:
    return name.startswith(".tmp-")
