"""The on-disk layout of a harvest directory: ``index.json``, shard files and their names, row fields.

Shared by the writer (``bridge.harvest.writer``) and the reader (``bridge.harvest.reader``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.kernel.errors import BridgeError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "bridge-harvest/1"
INDEX = "index.json"
#: held (``fcntl.flock``) by the process writing the harvest, which names itself in it
LOCK = ".harvest.lock"
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


def check_files(out: Path, index: dict[str, Any], leftovers_ok: bool, checksums: bool = False) -> None:
    """Refuse a directory with files the harvest did not write, or completed shards missing or changed: each
    must have the size the index records and a readable header naming its rows; with ``checksums``, also the
    sha256 the index records (every byte read)."""
    known = {INDEX} | {entry["file"] for entry in index["shards"].values()}
    ours = is_shard_file if leftovers_ok else lambda name: False  # written, not yet entered: rewritten
    unknown = sorted(
        p.name for p in out.iterdir() if p.name not in known and not ours(p.name) and not is_scratch(p.name)
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
        check_header(path, entry)
        if checksums:
            check_checksum(path, entry)


def check_header(path: Path, entry: dict[str, Any]) -> None:
    """Refuse a shard whose safetensors header is unreadable or names other rows than its index entry."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise HarvestError(
            f"{str(path)!r} is not a readable safetensors file (its header is damaged: {err}). " + DAMAGED_SHARD_ADVICE
        ) from None
    try:
        about = json.loads(metadata[FORMAT])
        first, rows = int(about["first_row"]), int(about.get("rows", entry["rows"]))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        raise HarvestError(f"{str(path)!r} has no {FORMAT} row range in its header. " + DAMAGED_SHARD_ADVICE) from None
    if (first, rows) != (entry["first_row"], entry["rows"]):
        raise HarvestError(
            f"{str(path)!r} holds rows {first}..{first + rows - 1}, but the index records it as rows "
            f"{entry['first_row']}..{entry['first_row'] + entry['rows'] - 1} (shards renamed or swapped). "
            + DAMAGED_SHARD_ADVICE
        )


def check_checksum(path: Path, entry: dict[str, Any]) -> None:
    """Refuse a shard whose bytes do not hash to the sha256 its index entry records (entries without one,
    written before checksums were recorded, pass)."""
    expected = entry.get("sha256")
    if expected is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise HarvestError(
            f"{str(path)!r} does not match the checksum (sha256) the index records: it was damaged after it was "
            "written. " + DAMAGED_SHARD_ADVICE
        )


DAMAGED_SHARD_ADVICE = (
    "Nothing was changed. To recompute it, delete the file and its entry in index.json (and set "
    '"complete" to false) and resume; or start again in another directory. `open(dir, verify=False)` reads '
    "a harvest without checksums."
)


def is_shard_file(name: str) -> bool:
    return re.fullmatch(r"shard-\d{5,}\.safetensors", name) is not None


def is_temporary(name: str) -> bool:
    return name.startswith(".tmp-")


def is_scratch(name: str) -> bool:
    """A file a harvest writes besides its results: a temporary file being written, or the lock."""
    return is_temporary(name) or name == LOCK


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the harvest lock of ``out`` (created if needed) for the duration: a second harvest into ``out`` is
    refused, naming the process that holds it. The lock file is removed on exit; a crashed holder's lock is
    released by the operating system. (Without ``fcntl``, on Windows, no lock is taken.)"""
    if fcntl is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise HarvestError(
                f"{str(out)!r} is being written by {holder}; wait for it to finish (or stop it), or choose another "
                "output directory. Nothing was changed."
            ) from None
        try:  # the holder before us may have removed the file we locked: lock the one at the path
            same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (since {started})")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()  # releases the lock
