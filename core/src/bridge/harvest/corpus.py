"""Corpora for harvesting: documents from text, JSONL, token lists or a saved ``datasets`` dataset, packed into rows.

A document is a text (tokenized without special tokens) or a list of token ids (used as given).
Packing (as SAELens's activation store does) turns the stream of documents into rows of exactly
``context_length`` tokens:

- every row starts with BOS (when the tokenizer has one);
- documents follow each other with EOS between them (BOS if there is no EOS), never at the start of a row;
- a document longer than what is left of a row continues in the next row, after that row's BOS;
- the last, incomplete row is dropped.

Each token also gets the index of the document it came from (``-1`` for the inserted BOS/EOS).
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bridge.kernel.errors import BridgeError

Document = str | list[int]
#: files that mark a directory written by ``datasets``' ``save_to_disk``
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
TEXT_FIELDS = ("text",)
TOKEN_FIELDS = ("tokens", "input_ids")


class CorpusError(BridgeError):
    """The data to harvest cannot be read (missing, empty, or without a text/tokens field)."""


class Corpus:
    """A re-readable sequence of documents and a fingerprint of its content (to recognise it on resume)."""

    def __init__(self, read: Callable[[], Iterator[Document]], fingerprint: str, description: str) -> None:
        self._read = read
        self.fingerprint = fingerprint
        self.description = description

    def documents(self) -> Iterator[Document]:
        """Every document, in order."""
        return self._read()

    @classmethod
    def of(cls, data: Any) -> Corpus:
        """A corpus from a path (text file, ``.jsonl``, a directory of them, a saved dataset), a ``datasets``
        dataset, or a list of texts / token lists."""
        if isinstance(data, Corpus):
            return data
        if isinstance(data, Mapping):
            raise CorpusError(
                f"data is a {type(data).__name__} (keys {sorted(map(str, data))[:5]}); pass a list of texts or token "
                "lists (e.g. [row['text'] for row in rows]), a path, or a `datasets.Dataset`."
            )
        if isinstance(data, str | Path):
            return cls._from_path(Path(data))
        if hasattr(data, "column_names") and hasattr(data, "__getitem__"):
            return cls._from_dataset(data, f"dataset {getattr(data, '_fingerprint', '?')}")
        if isinstance(data, Iterable):
            docs = [_as_document(item, f"item {i}") for i, item in enumerate(data)]
            digest = hashlib.sha256(json.dumps(docs).encode()).hexdigest()
            return cls(lambda: iter(docs), digest, f"{len(docs)} documents in memory")
        raise CorpusError(
            f"cannot read data of type {type(data).__name__}; pass a path (text, .jsonl, a directory, a saved "
            "dataset), a `datasets.Dataset`, or a list of texts or token lists."
        )

    @classmethod
    def _from_path(cls, path: Path) -> Corpus:
        if not path.exists():
            raise CorpusError(f"no data at {str(path)!r}; pass a text or .jsonl file, or a directory.")
        if path.is_dir() and any((path / marker).exists() for marker in DATASET_MARKERS):
            return cls._from_saved_dataset(path)
        files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
        if not files:
            raise CorpusError(f"{str(path)!r} holds no .txt or .jsonl file and no saved dataset.")
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode())
            decoder = codecs.getincrementaldecoder("utf-8")()
            line = 1
            with file.open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
                    line = _check_utf8(decoder, block, file, line)
            _check_utf8(decoder, b"", file, line, final=True)

        def read() -> Iterator[Document]:
            for file in files:
                yield from (_jsonl_documents if file.suffix == ".jsonl" else _text_documents)(file)

        return cls(read, digest.hexdigest(), ", ".join(str(f) for f in files))

    @classmethod
    def _from_saved_dataset(cls, path: Path) -> Corpus:
        try:
            import datasets
        except ImportError as err:
            raise CorpusError(
                f"{str(path)!r} is a saved `datasets` dataset; reading it needs the datasets package: "
                "pip install 'bridge-core[harvest]'"
            ) from err
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise CorpusError(f"{str(path)!r} holds splits {sorted(loaded)} and no 'train'; save one split.")
            loaded = loaded["train"]
        return cls._from_dataset(loaded, str(path))

    @classmethod
    def _from_dataset(cls, dataset: Any, description: str) -> Corpus:
        field = next((f for f in (*TEXT_FIELDS, *TOKEN_FIELDS) if f in dataset.column_names), None)
        if field is None:
            raise CorpusError(
                f"the dataset has columns {dataset.column_names}; harvesting reads a 'text' column or a "
                "'tokens'/'input_ids' column."
            )
        fingerprint = (
            getattr(dataset, "_fingerprint", None) or hashlib.sha256(json.dumps(dataset[field]).encode()).hexdigest()
        )

        def read() -> Iterator[Document]:
            for i, value in enumerate(dataset[field]):
                yield _as_document(value, f"row {i} of {description}")

        return cls(read, str(fingerprint), description)


def _check_utf8(decoder: codecs.IncrementalDecoder, block: bytes, file: Path, line: int, final: bool = False) -> int:
    """Decode ``block`` (the next bytes of ``file``, which is at ``line``); raise ``CorpusError`` naming the file
    and line of the first byte that is not UTF-8. Returns the line the next block starts in."""
    try:
        decoder.decode(block, final)
    except UnicodeDecodeError as err:  # err.object: the bytes held back from the last block (no newline), then block
        bad_line = line + err.object[: err.start].count(b"\n")
        raise CorpusError(
            f"{file}:{bad_line} is not UTF-8 text ({err.reason}, byte {err.object[err.start : err.start + 1]!r}); "
            "save the corpus as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or pass token lists."
        ) from None
    return line + block.count(b"\n")


def _as_document(value: Any, where: str) -> Document:
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return list(value)
    raise CorpusError(f"{where} is a {type(value).__name__}; a document is a text or a list of token ids.")


def _text_documents(path: Path) -> Iterator[Document]:
    """One document per non-empty line."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.strip():
                yield line


def _jsonl_documents(path: Path) -> Iterator[Document]:
    """One document per line: a JSON object with a "text" or a "tokens" field."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{where} is not JSON ({err.msg}); each line must be one JSON object.") from err
            field = next((f for f in (*TEXT_FIELDS, *TOKEN_FIELDS) if isinstance(row, dict) and f in row), None)
            if field is None:
                raise CorpusError(f'{where} has no "text" or "tokens" field; each line needs one.')
            yield _as_document(row[field], where)


def token_documents(documents: Iterable[Document], tokenizer: Any, chunk: int = 256) -> Iterator[list[int]]:
    """Documents as token ids: texts tokenized (no special tokens) a chunk at a time, token lists as given."""
    pending: list[str] = []

    def flush() -> Iterator[list[int]]:
        if pending:
            yield from tokenizer(pending, add_special_tokens=False)["input_ids"]
            pending.clear()

    for document in documents:
        if isinstance(document, str):
            if tokenizer is None:
                raise CorpusError("the data holds texts but the model has no tokenizer; pass token lists instead.")
            pending.append(document)
            if len(pending) >= chunk:
                yield from flush()
        else:
            yield from flush()
            yield document
    yield from flush()


def pack_rows(
    documents: Iterable[list[int]], context_length: int, bos: int | None, separator: int | None
) -> Iterator[tuple[list[int], list[int]]]:
    """Rows of ``context_length`` tokens and, per token, its document index (-1: inserted BOS/separator)."""
    if context_length < 2 and bos is not None:
        raise CorpusError(f"context_length must be at least 2 (BOS and one token), got {context_length}.")
    start = ([bos], [-1]) if bos is not None else ([], [])
    tokens, doc_ids = list(start[0]), list(start[1])
    for index, document in enumerate(documents):
        if separator is not None and len(tokens) > len(start[0]):  # not the first document of this row
            tokens.append(separator)
            doc_ids.append(-1)
        offset = 0
        while True:
            if len(tokens) == context_length:
                yield tokens, doc_ids
                tokens, doc_ids = list(start[0]), list(start[1])
            if offset >= len(document):
                break
            take = document[offset : offset + context_length - len(tokens)]
            tokens.extend(take)
            doc_ids.extend([index] * len(take))
            offset += len(take)


__all__ = ["Corpus", "CorpusError", "pack_rows", "token_documents"]
