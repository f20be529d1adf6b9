"""Harvesting: run a model over a corpus and write chosen activations to safetensors shards.

    import bridge
    acts = bridge.harvest("path/to/model", data="corpus.jsonl", hooks="blocks.*.hook_resid_post",
                          out="acts/", batch_size=8, context_length=128, max_tokens=1_000_000)
    acts = bridge.harvest.open("acts/")        # the same, read back
    acts[0]["blocks.1.hook_resid_post"]        # [context_length, d_model]

The corpus is packed into rows of ``context_length`` tokens (``bridge.harvest.corpus``). Rows are
assigned to shards by index: shard ``s`` holds rows ``s·R … s·R + R - 1`` (``R = rows_per_shard``),
so any process can compute any shard on its own (a multi-process run splits the shard ids between
ranks and merges their index entries). Each shard file holds, per row, the activation of every hook
(``[rows, *shape]`` in ``dtype``), ``tokens`` and ``doc_ids`` ``[rows, context_length]``, ``positions``
``[rows, context_length]`` (the position of each token in its row) and ``row_ids`` ``[rows]``.

``index.json`` records the arguments (and a hash of them, of the model and of the data), the hooks
with their per-row shapes, and each completed shard. A shard is written to a temporary file and
renamed, then entered in the index (also written atomically), so an interrupted run restarts where it
stopped: with the same arguments it skips the shards in the index and writes the rest, byte for byte as
an uninterrupted run would. A directory that is not a harvest, holds unknown files, or was written with
other arguments is refused, never overwritten. Each forward pass stops after the last block a hook needs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from bridge.harvest.corpus import Corpus, pack_rows, token_documents
from bridge.harvest.distributed import Ranks, join_process_group
from bridge.harvest.layout import (
    FORMAT,
    INDEX,
    HarvestError,
    check_files,
    is_scratch,
    is_shard_file,
    is_temporary,
    locked,
    read_index,
    shard_file,
    shard_rows,
)
from bridge.harvest.reader import HarvestedActivations
from bridge.kernel import resolution

if TYPE_CHECKING:
    from bridge.kernel.hooked_model import HookedModel

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: a shard's size when rows_per_shard is not given (a whole number of batches)
TARGET_SHARD_BYTES = 256 * 2**20

HookSelection = str | Sequence[str] | Callable[[str], bool]


def harvest(
    model_or_name: HookedModel | str | os.PathLike,
    data: Any,
    hooks: HookSelection,
    out: str | os.PathLike,
    batch_size: int = 8,
    context_length: int = 128,
    max_tokens: int | None = None,
    dtype: str = "float32",
    rows_per_shard: int | None = None,
    progress: bool = True,
    after_shard: Callable[[int], None] | None = None,
) -> HarvestedActivations:
    """Run the model over ``data`` and write the activations of ``hooks`` to ``out``; returns them, read back.

    ``data``: a text file (a document per line), a ``.jsonl`` file (a "text" or "tokens" field per line),
    a directory of those or one saved by ``datasets``' ``save_to_disk``, a ``datasets`` dataset, or a list
    of texts / token lists. ``hooks``: hook names or globs (``"blocks.*.hook_resid_post"``; a string may
    list several, comma-separated) or a predicate on names. ``max_tokens``: harvest
    ``max_tokens // context_length`` rows (default: the whole corpus). ``dtype``: the stored activations'
    dtype (the model runs in its own). ``after_shard(shard_id)`` is called after each shard is committed.
    An existing ``out`` of the same harvest is resumed; anything else there is refused. Under ``torchrun``
    (or any launcher setting torch.distributed's variables) each process writes its share of the shards."""
    if dtype not in DTYPES:
        raise HarvestError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    for name, value in (("batch_size", batch_size), ("context_length", context_length)):
        _check_positive_int(name, value)
    if rows_per_shard is not None:
        _check_positive_int("rows_per_shard", rows_per_shard)
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < context_length
    ):
        raise HarvestError(f"max_tokens must be an int ≥ context_length ({context_length}), got {max_tokens!r}.")
    if not callable(hooks) and not (hooks.strip(", ") if isinstance(hooks, str) else list(hooks)):
        raise HarvestError(
            f"hooks={hooks!r} names no hook point; pass names or globs, e.g. 'blocks.*.hook_resid_post'."
        )
    out = Path(out)
    _refuse_foreign(out)  # before loading anything
    corpus = Corpus.of(data)  # reads (and checks) every file once, for its fingerprint
    ranks = join_process_group()  # rank 0 of 1 unless a launcher (torchrun…) started several processes
    model, model_id = _model(model_or_name, ranks.device())
    n_ctx = model.cfg.n_ctx
    if n_ctx is not None and context_length > n_ctx and model.cfg.positional_embedding_type == "standard":
        raise HarvestError(f"context_length {context_length} is longer than the model's n_ctx {n_ctx} (its positions).")
    names = _resolve_hooks(model, hooks)
    shapes = _row_shapes(model, names, context_length)
    if rows_per_shard is None:
        row_bytes = sum(math.prod(s) for s in shapes.values()) * DTYPES[dtype].itemsize
        rows_per_shard = max(1, TARGET_SHARD_BYTES // max(row_bytes, 1) // batch_size) * batch_size
    tokenizer = model.tokenizer
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    args = {
        "model": model_id,
        "data": corpus.fingerprint,
        "hooks": names,
        "dtype": dtype,
        "batch_size": batch_size,
        "context_length": context_length,
        "max_tokens": max_tokens,
        "rows_per_shard": rows_per_shard,
        "bos": bos,
        "separator": eos if eos is not None else bos,
    }
    _require_a_row(corpus, tokenizer, args)
    if ranks.world_size > 1:
        _harvest_ranks(model, args, shapes, corpus, out, stop_layer(model, names), progress, after_shard, ranks)
        return HarvestedActivations(out)
    with locked(out):
        index = _open_output(out, args, shapes, corpus.description)
        if not index["complete"]:
            _HarvestRun(model, index, out, corpus, stop_layer(model, names), progress, after_shard).run()
    return HarvestedActivations(out)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise HarvestError(f"{name} must be a positive int, got {value!r}.")


def _require_a_row(corpus: Corpus, tokenizer: Any, args: dict[str, Any]) -> None:
    """Refuse data that gives no full row (an empty corpus, blank lines only, fewer tokens than a row)."""
    length = args["context_length"]
    documents = token_documents(corpus.documents(), tokenizer)
    if next(pack_rows(documents, length, args["bos"], args["separator"]), None) is not None:
        return
    counts = [len(doc) for doc in token_documents(corpus.documents(), tokenizer)]
    raise HarvestError(
        f"the data ({corpus.description}) gives no full row: {sum(counts)} tokens in {len(counts)} documents, "
        f"and a row is context_length={length} tokens (BOS included); pass more data or a shorter context_length."
    )


def _harvest_ranks(
    model: HookedModel,
    args: dict[str, Any],
    shapes: dict[str, list[int]],
    corpus: Corpus,
    out: Path,
    stop: int | None,
    progress: bool,
    after_shard: Callable[[int], None] | None,
    ranks: Ranks,
) -> None:
    """One rank's part of a multi-process harvest: rank 0 opens ``out`` (or resumes it) and tells the others;
    each rank writes its shards and its index part; after a barrier rank 0 merges the parts."""
    with contextlib.ExitStack() as lock:  # rank 0 holds the directory's lock for the whole run
        opened: dict[str, Any] | str = ""
        if ranks.rank == 0:
            try:
                lock.enter_context(locked(out))
                opened = _open_output(out, args, shapes, corpus.description)
            except HarvestError as err:
                opened = str(err)
        opened = ranks.broadcast(opened)
        if isinstance(opened, str):
            raise HarvestError(opened)
        if opened["complete"]:
            return
        progress = progress and ranks.rank == 0
        _HarvestRun(model, opened, out, corpus, stop, progress, after_shard, ranks.rank, ranks.world_size).run()
        ranks.barrier()
        if ranks.rank == 0:
            merge_rank_indexes(out, read_index(out))
        ranks.barrier()


def args_hash(args: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()


def _model(model_or_name: Any, device: torch.device | None = None) -> tuple[HookedModel, dict[str, Any]]:
    """The hooked model, and what identifies it in the arguments hash: its name and what decides its activations
    (a digest of every weight; the weight processing done; the hooks and SAEs on its hook points)."""
    if isinstance(model_or_name, str | os.PathLike):
        local = Path(model_or_name)
        name = str(local.resolve()) if local.exists() else str(model_or_name)
        model: HookedModel = resolution.load(model_or_name, device=device)
    else:
        model = model_or_name
        name = model.cfg.model_name
    model_id = {"name": name, "architecture": model.cfg.architecture, "n_params": model.cfg.n_params}
    return model, {**model_id, "activations": model.activation_fingerprint()}


def _resolve_hooks(model: HookedModel, hooks: HookSelection) -> list[str]:
    enabled = [n for n, p in model.hook_dict.items() if p.enabled]
    if callable(hooks):
        selected = [n for n in enabled if hooks(n)]
        if not selected:
            raise HarvestError("the hook predicate selects no hook point; `bridge inspect MODEL` lists them.")
        return selected
    patterns = [p.strip() for p in hooks.split(",")] if isinstance(hooks, str) else list(hooks)
    names: list[str] = []
    for pattern in patterns:
        matched = [pattern] if pattern in enabled else [n for n in enabled if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            if pattern in model.hook_dict:
                raise HarvestError(f"{pattern!r} is an opt-in hook point; enable it on the model first.")
            close = [n for n in enabled if n.rsplit(".", 1)[-1] == pattern.rsplit(".", 1)[-1]][:3]
            raise HarvestError(
                f"no hook point matches {pattern!r}"
                + (f" (hook points with that ending: {close})" if close else "")
                + "; `bridge inspect MODEL` lists them, and globs like 'blocks.*.hook_resid_post' work."
            )
        names.extend(n for n in matched if n not in names)
    return names


def stop_layer(model: HookedModel, names: Sequence[str]) -> int | None:
    """The ``stop_at_layer`` after which no hook in ``names`` fires (None: the whole model must run)."""
    needed = -1
    for name in names:
        if name.startswith("blocks."):
            needed = max(needed, int(name.split(".")[1]))
        elif not name.startswith(("hook_embed", "hook_pos_embed")):
            return None
    stop = needed + 1
    if stop == model.cfg.n_layers and model.ln_final is None:
        return None
    return stop


def _row_shapes(model: HookedModel, names: list[str], context_length: int) -> dict[str, list[int]]:
    """Each hook's activation shape for one row, from a dry run on one row of zeros."""
    with torch.no_grad():
        tokens = torch.zeros(1, context_length, dtype=torch.long)
        _, cache = model.run_with_cache(
            tokens, names_filter=names, stop_at_layer=stop_layer(model, names), attention_mask=torch.ones_like(tokens)
        )
    missing = [n for n in names if n not in cache]
    if missing:
        raise HarvestError(f"{missing} did not fire on a forward pass of this model; harvest other hook points.")
    return {name: list(cache[name].shape[1:]) for name in names}


def _holds_results(out: Path) -> bool:
    """Whether ``out`` holds anything but a harvest's scratch files (temporaries of a killed run, the lock)."""
    return out.exists() and any(not is_scratch(p.name) for p in out.iterdir())


def _refuse_foreign(out: Path) -> None:
    """Refuse a path that cannot hold this harvest: a file, or a non-empty directory that is no harvest."""
    if out.exists() and not out.is_dir():
        raise HarvestError(f"{str(out)!r} is a file; pass a directory for the harvest.")
    if _holds_results(out):
        if not (out / INDEX).exists():
            raise HarvestError(
                f"{str(out)!r} is not empty and has no {INDEX}: it is not a harvest. Choose another output "
                "directory (nothing there was changed)."
            )
        read_index(out)


def _open_output(out: Path, args: dict[str, Any], shapes: dict[str, list[int]], data: str) -> dict[str, Any]:
    """The index of ``out``: a new one for a missing or empty directory (or one whose harvest committed nothing),
    the existing one to resume (every completed shard checked against its checksum first). Called with the lock
    held, so temporary files there are a killed run's."""
    _refuse_foreign(out)
    if _holds_results(out) and not _nothing_committed(out, args):
        index = read_index(out)
        if index.get("args_hash") != args_hash(args):
            differ = sorted(
                k for k in args.keys() | index.get("args", {}).keys() if index["args"].get(k) != args.get(k)
            )
            raise HarvestError(
                f"{str(out)!r} holds a harvest made with other arguments (they differ in: {', '.join(differ)}); "
                "resume it with the same ones, or choose another output directory."
            )
        index = merge_rank_indexes(out, index)
        check_files(out, index, leftovers_ok=True, checksums=True)
        for path in out.iterdir():
            if is_temporary(path.name):
                path.unlink()  # a shard or index interrupted while being written
        return index
    out.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if is_temporary(path.name) or path.name == INDEX:
            path.unlink()  # a run killed before it committed anything
    index = {
        "format": FORMAT,
        "args": args,
        "args_hash": args_hash(args),
        "model": args["model"]["name"],
        "data": data,
        "hooks": args["hooks"],
        "dtype": args["dtype"],
        "shapes": shapes,
        "context_length": args["context_length"],
        "rows_per_shard": args["rows_per_shard"],
        "shards": {},
        "complete": False,
        "n_rows": None,
    }
    write_index(out, index)
    return index


def _nothing_committed(out: Path, args: dict[str, Any]) -> bool:
    """Whether ``out`` holds a readable index of other arguments with no shard entered and no shard or rank part
    written: a run that died before committing anything, which a harvest of any arguments may start over."""
    try:
        index = read_index(out)
    except HarvestError:
        return False
    leftovers = [p for p in out.iterdir() if is_shard_file(p.name) or _is_rank_index(p.name)]
    return not index["shards"] and not leftovers and index.get("args_hash") != args_hash(args)


def write_index(out: Path, index: dict[str, Any], name: str = INDEX) -> None:
    """Replace ``index.json`` (or a rank's part of it, ``name``) atomically; shards are listed in id order."""
    index["shards"] = dict(sorted(index["shards"].items(), key=lambda item: int(item[0])))
    _atomic_write(out / name, json.dumps(index, indent=1).encode())


def rank_index_file(rank: int) -> str:
    """The index entries rank ``rank`` of a multi-process harvest committed, until rank 0 merges them."""
    return f"index.rank-{rank:05d}.json"


def _is_rank_index(name: str) -> bool:
    return name.startswith("index.rank-") and name.endswith(".json")


def merge_rank_indexes(out: Path, index: dict[str, Any]) -> dict[str, Any]:
    """Fold the ranks' index parts into ``index`` (shards in id order), mark it complete when every shard of
    the corpus is there, write it and delete the parts; returns it. Also run when resuming after a
    multi-process run was interrupted."""
    parts = sorted(p for p in out.iterdir() if _is_rank_index(p.name))
    if not parts:
        return index
    n_shards = None
    for part in parts:
        entries = json.loads(part.read_text())
        index["shards"].update(entries["shards"])
        n_shards = entries.get("n_shards", n_shards)
    index["shards"] = dict(sorted(index["shards"].items(), key=lambda item: int(item[0])))
    index["complete"] = n_shards is not None and {int(s) for s in index["shards"]} == set(range(n_shards))
    index["n_rows"] = sum(entry["rows"] for entry in index["shards"].values()) if index["complete"] else None
    write_index(out, index)
    for part in parts:
        part.unlink()
    return index


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with tmp.open("wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class _HarvestRun:
    """One pass over the corpus: shards not yet in the index are computed and committed in order.

    Shard ``s`` holds the rows ``shard_rows(s, R)`` of the packed corpus, whoever computes it. ``rank`` and
    ``world_size`` are the seam for a multi-process harvest: a rank writes the shards with
    ``s % world_size == rank`` (skipping the other rows), and the ranks' index entries are merged after."""

    def __init__(
        self,
        model: HookedModel,
        index: dict[str, Any],
        out: Path,
        corpus: Corpus,
        stop: int | None,
        progress: bool,
        after_shard: Callable[[int], None] | None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.index_file = INDEX if world_size == 1 else rank_index_file(rank)
        self.model, self.index, self.out, self.corpus = model, index, out, corpus
        self.stop, self.progress, self.after_shard = stop, progress, after_shard
        args = index["args"]
        self.hooks: list[str] = args["hooks"]
        self.dtype = DTYPES[args["dtype"]]
        self.batch_size, self.length, self.per_shard = (
            args["batch_size"],
            args["context_length"],
            args["rows_per_shard"],
        )
        self.max_rows = None if args["max_tokens"] is None else args["max_tokens"] // self.length

    def rows(self) -> Iterator[tuple[list[int], list[int]]]:
        args = self.index["args"]
        documents = token_documents(self.corpus.documents(), self.model.tokenizer)
        return islice(pack_rows(documents, self.length, args["bos"], args["separator"]), self.max_rows)

    def run(self) -> None:
        done = {int(s) for s in self.index["shards"]}
        total = None if self.max_rows is None else self.max_rows * self.length
        initial = sum(entry["rows"] for entry in self.index["shards"].values()) * self.length
        rows = self.rows()
        with tqdm(
            total=total, initial=initial, unit="tok", unit_scale=True, desc="harvest", disable=not self.progress
        ) as bar:
            for shard_id in range(0, 2**31):
                chunk = list(islice(rows, self.per_shard))
                if not chunk:
                    break
                if shard_id in done or shard_id % self.world_size != self.rank:
                    continue
                self.write_shard(shard_id, chunk, bar)
                if self.after_shard is not None:
                    self.after_shard(shard_id)
        self.index["complete"] = self.world_size == 1  # with ranks: once their entries are merged
        self.index["n_rows"] = sum(entry["rows"] for entry in self.index["shards"].values())
        if self.world_size > 1:
            self.index["n_shards"] = shard_id  # every rank reads the whole corpus: the number of shards
        write_index(self.out, self.index, self.index_file)

    def write_shard(self, shard_id: int, chunk: list[tuple[list[int], list[int]]], bar: tqdm) -> None:
        """Compute the activations of the rows of one shard and commit them (file, then index entry)."""
        from safetensors.torch import save

        first = shard_rows(shard_id, self.per_shard).start
        tokens = torch.tensor([row for row, _ in chunk], dtype=torch.long)  # [rows, L]
        acts: dict[str, list[torch.Tensor]] = {name: [] for name in self.hooks}
        for start in range(0, len(chunk), self.batch_size):
            batch = tokens[start : start + self.batch_size]
            with torch.no_grad():
                _, cache = self.model.run_with_cache(  # every row is full: the mask says so (BOS may be the pad id)
                    batch,
                    names_filter=self.hooks,
                    stop_at_layer=self.stop,
                    return_type=None,
                    attention_mask=torch.ones_like(batch),
                )
            for name in self.hooks:
                acts[name].append(cache[name].to(device="cpu", dtype=self.dtype))
            bar.update(batch.numel())
        tensors = {name: torch.cat(parts).contiguous() for name, parts in acts.items()}
        tensors["tokens"] = tokens
        tensors["positions"] = torch.arange(self.length).expand(len(chunk), self.length).contiguous()
        tensors["doc_ids"] = torch.tensor([ids for _, ids in chunk], dtype=torch.long)
        tensors["row_ids"] = torch.arange(first, first + len(chunk))
        # one metadata key: safetensors writes a metadata map in no fixed order, and shards must be reproducible
        about = json.dumps({"shard": shard_id, "first_row": first, "rows": len(chunk)}, sort_keys=True)
        payload = save(tensors, metadata={FORMAT: about})
        name = shard_file(shard_id)
        _atomic_write(self.out / name, payload)
        self.index["shards"][str(shard_id)] = {
            "file": name,
            "rows": len(chunk),
            "first_row": first,
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        write_index(self.out, self.index, self.index_file)


__all__ = ["HarvestError", "harvest", "shard_rows", "stop_layer"]
