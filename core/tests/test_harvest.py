"""Harvesting: packing, activations against HF, every input kind, resume after an interrupt, refused directories."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge
from bridge.harvest.corpus import Corpus, CorpusError, pack_rows
from bridge.harvest.writer import HarvestError

RESID = "blocks.0.hook_resid_post"
LENGTH = 8


def texts(n: int = 40) -> list[str]:
    return [" ".join(f"t{(7 * i + j) % 90}" for j in range(3 + i % 11)) for i in range(n)]


@pytest.fixture(scope="module")
def model(gpt2_dir):
    return bridge.load(gpt2_dir)


@pytest.fixture(scope="module")
def hf(gpt2_dir):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(gpt2_dir, attn_implementation="eager").eval()


def run(model, data, out, **kwargs):
    options = {"hooks": RESID, "batch_size": 3, "context_length": LENGTH, "rows_per_shard": 4, "progress": False}
    return bridge.harvest(model, data=data, out=out, **{**options, **kwargs})


def expected_rows(model, docs: list, length: int = LENGTH) -> list[list[int]]:
    """The packing written out by hand: BOS per row, EOS between documents, leftovers continue."""
    bos, eos = model.tokenizer.bos_token_id, model.tokenizer.eos_token_id
    stream: list[int] = []
    rows = []
    for doc in docs:
        ids = doc if isinstance(doc, list) else model.tokenizer(doc, add_special_tokens=False)["input_ids"]
        stream += ([eos] if stream else []) + ids
    row: list[int] = [bos]
    position = 0
    while position < len(stream):
        if len(row) == 1 and stream[position] == eos and rows:  # a row never starts with the separator
            position += 1
            continue
        row.append(stream[position])
        position += 1
        if len(row) == length:
            rows.append(row)
            row = [bos]
    return rows


def test_packing_by_example():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16], [17]]
    rows = list(pack_rows(iter(docs), 5, bos=1, separator=2))
    assert [r for r, _ in rows] == [[1, 5, 6, 7, 2], [1, 8, 9, 2, 10], [1, 11, 12, 13, 14], [1, 15, 16, 2, 17]]
    assert [d for _, d in rows][1] == [-1, 1, 1, -1, 2]
    unmarked = [r for r, _ in pack_rows(iter(docs), 4, bos=None, separator=None)]
    assert unmarked == [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(3, 50), min_size=0, max_size=12), max_size=8),
    length=st.integers(2, 9),
)
def test_packing_keeps_every_token_in_order(docs, length):
    rows = list(pack_rows(iter(docs), length, bos=1, separator=2))
    assert all(len(r) == length and r[0] == 1 and len(d) == length for r, d in rows)
    kept = [t for r, d in rows for t, i in zip(r, d, strict=True) if i >= 0]
    flat = [t for doc in docs for t in doc]
    assert kept == flat[: len(kept)]
    assert len(flat) - len(kept) < length  # only the last, incomplete row is dropped
    for r, d in rows:
        assert all(t == (1 if j == 0 else 2) for j, (t, i) in enumerate(zip(r, d, strict=True)) if i < 0)


def test_activations_equal_hf_hidden_states_and_run_with_cache(model, hf, tmp_path):
    hooks = [RESID, "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z"]
    acts = run(model, texts(), tmp_path / "out", hooks=hooks, max_tokens=LENGTH * 10)
    assert len(acts) == 10 and acts.complete
    everything = acts.to_torch()
    tokens = everything["tokens"]
    assert tokens.tolist() == expected_rows(model, texts())[:10]
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
        _, cache = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
    torch.testing.assert_close(everything[RESID], hidden[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(everything["blocks.1.hook_resid_pre"], hidden[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(everything["blocks.1.attn.hook_z"], cache["blocks.1.attn.hook_z"], atol=1e-5, rtol=1e-5)
    assert everything["positions"].tolist() == [list(range(LENGTH))] * 10
    assert everything["row_ids"].tolist() == list(range(10))


def test_each_forward_stops_after_the_last_block_needed(model, tmp_path):
    calls = []
    handle = model.hf_model.transformer.h[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        run(model, texts(), tmp_path / "out", max_tokens=LENGTH * 5)
    finally:
        handle.remove()
    assert calls == []


def test_interrupted_and_resumed_is_byte_identical(model, tmp_path):
    whole = run(model, texts(), tmp_path / "whole", max_tokens=LENGTH * 18)
    stopped_after = []

    def interrupt(shard_id):
        stopped_after.append(shard_id)
        if shard_id == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(model, texts(), tmp_path / "resumed", max_tokens=LENGTH * 18, after_shard=interrupt)
    partial = bridge.harvest.open(tmp_path / "resumed")
    assert not partial.complete and len(partial) == 8
    resumed = run(model, texts(), tmp_path / "resumed", max_tokens=LENGTH * 18, after_shard=stopped_after.append)
    assert stopped_after == [0, 1, 2, 3, 4]  # shards 0 and 1 were not written again
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert len(files) == 6  # 5 shards (4+4+4+4+2 rows) and the index
    for name in files:
        if name != "index.json":
            assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name
    assert len(resumed) == len(whole) == 18
    assert torch.equal(resumed.to_torch(RESID), whole.to_torch(RESID))


def test_a_crash_between_shard_and_index_is_recovered(model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(model, texts(), out, max_tokens=LENGTH * 12, after_shard=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    index = json.loads((out / "index.json").read_text())
    del index["shards"]["0"]  # the shard was renamed into place, the index not yet updated
    (out / "index.json").write_text(json.dumps(index))
    (out / ".tmp-123-shard-00001.safetensors").write_bytes(b"half a shard")
    acts = run(model, texts(), out, max_tokens=LENGTH * 12)
    assert len(acts) == 12 and not (out / ".tmp-123-shard-00001.safetensors").exists()
    reference = run(model, texts(), tmp_path / "reference", max_tokens=LENGTH * 12)
    assert torch.equal(acts.to_torch(RESID), reference.to_torch(RESID))


def test_foreign_or_corrupt_directories_are_refused_and_left_alone(model, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(HarvestError, match="not a harvest"):
        run(model, texts(), foreign)
    with pytest.raises(HarvestError, match="not a harvest"):  # refused before the model is even loaded
        bridge.harvest(tmp_path / "no-such-model", data=texts(), hooks=RESID, out=foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    done = tmp_path / "done"
    run(model, texts(), done, max_tokens=LENGTH * 8)
    snapshot = {p.name: p.read_bytes() for p in done.iterdir()}
    with pytest.raises(HarvestError, match="differ in: context_length"):
        run(model, texts(), done, max_tokens=LENGTH * 8, context_length=LENGTH + 1)
    with pytest.raises(HarvestError, match="differ in: data"):
        run(model, texts(30), done, max_tokens=LENGTH * 8)
    with pytest.raises(HarvestError, match="differ in: hooks"):
        run(model, texts(), done, max_tokens=LENGTH * 8, hooks="blocks.1.hook_resid_post")
    (done / "stray.bin").write_bytes(b"?")
    with pytest.raises(HarvestError, match=r"did not write \(stray\.bin\)"):
        run(model, texts(), done, max_tokens=LENGTH * 8)
    (done / "stray.bin").unlink()
    assert {p.name: p.read_bytes() for p in done.iterdir()} == snapshot

    shard = done / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(HarvestError, match="corrupt"):
        run(model, texts(), done, max_tokens=LENGTH * 8)
    with pytest.raises(HarvestError, match="corrupt"):
        bridge.harvest.open(done)
    (done / "index.json").write_text("{not json")
    with pytest.raises(HarvestError, match=r"unreadable index\.json"):
        run(model, texts(), done, max_tokens=LENGTH * 8)
    (done / "index.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(HarvestError, match="not a bridge harvest index"):
        bridge.harvest.open(done)
    file_out = tmp_path / "file"
    file_out.write_text("")
    with pytest.raises(HarvestError, match="is a file"):
        run(model, texts(), file_out)


def test_text_jsonl_tokens_directories_and_lists_give_the_same_rows(model, tmp_path):
    docs = texts(30)
    token_docs = [model.tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    (tmp_path / "corpus.txt").write_text("\n".join(docs) + "\n\n")
    (tmp_path / "text.jsonl").write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)))
    (tmp_path / "tokens.jsonl").write_text("\n".join(json.dumps({"tokens": t}) for t in token_docs))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(docs[:10]))
    (folder / "b.jsonl").write_text("\n".join(json.dumps({"tokens": t}) for t in token_docs[10:]))
    expected = expected_rows(model, docs)
    sources = {
        "txt": tmp_path / "corpus.txt",
        "text.jsonl": tmp_path / "text.jsonl",
        "tokens.jsonl": str(tmp_path / "tokens.jsonl"),
        "folder": folder,
        "texts": docs,
        "token lists": [torch.tensor(t) for t in token_docs],
    }
    for label, source in sources.items():
        acts = run(model, source, tmp_path / f"out-{label.replace(' ', '-')}")
        assert acts.to_torch(RESID).shape[0] == len(expected), label
        assert acts.to_torch()["tokens"].tolist() == expected, label


def test_a_saved_datasets_dataset(model, tmp_path):
    datasets = pytest.importorskip("datasets")
    docs = texts(30)
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": docs})}).save_to_disk(str(tmp_path / "dict"))
    for name in ("saved", "dict"):
        acts = run(model, tmp_path / name, tmp_path / f"out-{name}")
        assert acts.to_torch()["tokens"].tolist() == expected_rows(model, docs)
    datasets.Dataset.from_dict({"body": docs}).save_to_disk(str(tmp_path / "wrong"))
    with pytest.raises(CorpusError, match="'text' column"):
        run(model, tmp_path / "wrong", tmp_path / "out-wrong")


def test_reader_rows_shards_and_dataloader(model, tmp_path):
    acts = run(model, texts(), tmp_path / "out", hooks=[RESID, "hook_embed"], max_tokens=LENGTH * 10)
    everything = acts.to_torch()
    assert set(everything) == {RESID, "hook_embed", "tokens", "positions", "doc_ids", "row_ids"}
    assert acts.shapes == {RESID: [LENGTH, 32], "hook_embed": [LENGTH, 32]}
    assert torch.equal(acts[-1][RESID], everything[RESID][9])
    assert torch.equal(acts[5]["tokens"], everything["tokens"][5])
    assert [len(s["row_ids"]) for s in acts.shards()] == [4, 4, 2]
    assert torch.equal(torch.stack([row[RESID] for row in acts]), everything[RESID])
    batches = list(torch.utils.data.DataLoader(acts, batch_size=4))
    assert torch.equal(torch.cat([b[RESID] for b in batches]), everything[RESID])
    with pytest.raises(IndexError):
        acts[10]
    with pytest.raises(HarvestError, match="was not harvested"):
        acts.to_torch("blocks.1.hook_resid_post")


def test_stored_dtype(model, tmp_path):
    full = run(model, texts(), tmp_path / "f32", max_tokens=LENGTH * 4).to_torch(RESID)
    half = run(model, texts(), tmp_path / "bf16", max_tokens=LENGTH * 4, dtype="bfloat16").to_torch(RESID)
    assert half.dtype == torch.bfloat16 and torch.equal(half, full.to(torch.bfloat16))


def test_bad_arguments_say_what_to_do(model, tmp_path):
    with pytest.raises(HarvestError, match="dtype must be one of"):
        run(model, texts(), tmp_path / "a", dtype="float64")
    with pytest.raises(HarvestError, match=r"no hook point matches 'blocks\.0\.hook_resid'"):
        run(model, texts(), tmp_path / "a", hooks="blocks.0.hook_resid")
    with pytest.raises(HarvestError, match="max_tokens must be"):
        run(model, texts(), tmp_path / "a", max_tokens=3)
    with pytest.raises(CorpusError, match="no data at"):
        run(model, tmp_path / "missing.txt", tmp_path / "a")
    (tmp_path / "bad.jsonl").write_text('{"text": "t1"}\n{"body": "t2"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2 has no \"text\" or \"tokens\""):
        run(model, tmp_path / "bad.jsonl", tmp_path / "b")
    with pytest.raises(CorpusError, match="a document is a text or a list of token ids"):
        Corpus.of([1.5])
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    shutil.rmtree(tmp_path / "b", ignore_errors=True)


def test_shipped_model_by_name_with_globs(tmp_path):
    model_dir = Path(__file__).resolve().parents[2] / "examples" / "models" / "induction-2l"
    acts = bridge.harvest(
        str(model_dir), data=texts(), hooks="blocks.*.hook_resid_post", out=tmp_path / "o", context_length=16,
        batch_size=4, max_tokens=64, progress=False,
    )  # fmt: skip
    assert acts.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"] and len(acts) == 4
    assert acts.index["model"] == str(model_dir)


class OneProcessRanks:
    """Rank ``rank`` of ``world_size``, run one after another in this process: what rank 0 broadcast is kept for
    the others (a class attribute), barriers are no-ops."""

    opened: object = None

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def barrier(self) -> None:
        return None

    def broadcast(self, value):
        if self.rank == 0:
            OneProcessRanks.opened = value
        return OneProcessRanks.opened

    def device(self):
        return None


def test_a_harvest_over_three_ranks_with_a_dozen_shards_equals_one_process(model, tmp_path, monkeypatch):
    """Ranks write the shards ``s % 3 == rank`` and rank 0 merges their index parts: with 14 shards (ids past 9,
    which a merge by string would put between 1 and 2) the index lists the shards in id order and every file
    equals a one-process harvest's."""
    import bridge.harvest.writer as writer

    whole = run(model, texts(60), tmp_path / "whole", max_tokens=LENGTH * 27, rows_per_shard=2)
    out = tmp_path / "ranks"
    monkeypatch.setattr(writer, "HarvestedActivations", lambda out: None)  # a rank's view before the merge
    for rank in (0, 1, 2):  # rank 0 opens the output; each rank writes its shards and its part of the index
        monkeypatch.setattr(writer, "join_process_group", lambda rank=rank: OneProcessRanks(rank, 3))
        run(model, texts(60), out, max_tokens=LENGTH * 27, rows_per_shard=2)
    writer.merge_rank_indexes(out, writer.read_index(out))  # what rank 0 does once every rank is done
    merged = bridge.harvest.open(out)
    assert merged.complete and len(merged) == len(whole) == 27
    ids = list(merged.index["shards"])
    assert ids == [str(i) for i in range(14)]
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert files == sorted(p.name for p in out.iterdir())
    for name in files:
        if name != "index.json":
            assert (tmp_path / "whole" / name).read_bytes() == (out / name).read_bytes(), name
    assert torch.equal(merged.to_torch(RESID), whole.to_torch(RESID))
