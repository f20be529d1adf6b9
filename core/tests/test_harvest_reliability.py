"""Harvesting when things go wrong: resuming with another model (changed weights, another SAE or hooks), damaged or
swapped shards, corpora that give no row or are not UTF-8, two harvests in one directory, a harvest killed while
writing its first index, a resume after a lost rank, pickling the reader, and bad arguments.

References: an uninterrupted harvest of the same arguments (byte for byte), and the files as they were before a
refused call (nothing may change)."""

import json
import pickle
import shutil

import pytest
import torch

import bridge
from bridge.app.cli import main as cli_main
from bridge.harvest.corpus import CorpusError
from bridge.harvest.writer import HarvestError
from bridge.testing.saes import TinySAE

RESID = "blocks.0.hook_resid_post"
LENGTH = 8
ROWS = 12  # 3 shards of 4 rows


def texts(n: int = 40) -> list[str]:
    return [" ".join(f"t{(7 * i + j) % 90}" for j in range(3 + i % 11)) for i in range(n)]


def run(model, out, data=None, **kwargs):
    options = {
        "hooks": RESID,
        "batch_size": 3,
        "context_length": LENGTH,
        "rows_per_shard": 4,
        "progress": False,
        "max_tokens": LENGTH * ROWS,
    }
    return bridge.harvest(model, data=texts() if data is None else data, out=out, **{**options, **kwargs})


class Interrupt(Exception):
    pass


def stop_after(shard: int):
    def after_shard(shard_id):
        if shard_id == shard:
            raise Interrupt

    return after_shard


def files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def model(gpt2_dir):
    return bridge.load(gpt2_dir)


@pytest.fixture(scope="module")
def whole(model, tmp_path_factory):
    """An uninterrupted harvest: 3 shards of 4 rows."""
    out = tmp_path_factory.mktemp("whole") / "out"
    run(model, out)
    return out


# --------------------------------------------------------------- item 5: what produced the activations


def test_changed_block_weights_are_not_resumed(gpt2_dir, tmp_path):
    model = bridge.load(gpt2_dir)
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        run(model, out, after_shard=stop_after(0))
    before = files(out)
    with torch.no_grad():  # a fine-tune with frozen embeddings
        model.hf_model.transformer.h[0].mlp.c_fc.weight.mul_(1.01)
    with pytest.raises(HarvestError, match=r"other arguments \(they differ in: model\)"):
        run(model, out)
    assert files(out) == before


def test_another_spliced_sae_or_hook_is_not_resumed_and_the_same_one_is(gpt2_dir, whole, tmp_path):
    model = bridge.load(gpt2_dir)
    sae = TinySAE(model.cfg.d_model, seed=1)
    out = tmp_path / "out"
    model.add_sae(sae, hook_name="blocks.0.hook_mlp_out")
    with pytest.raises(Interrupt):
        run(model, out, after_shard=stop_after(0))
    model.reset_saes()
    with pytest.raises(HarvestError, match="differ in: model"):  # no SAE now
        run(model, out)
    model.add_sae(TinySAE(model.cfg.d_model, seed=2), hook_name="blocks.0.hook_mlp_out")
    with pytest.raises(HarvestError, match="differ in: model"):  # another SAE
        run(model, out)
    model.reset_saes()
    model.add_sae(sae, hook_name="blocks.0.hook_mlp_out", use_error_term=True)
    with pytest.raises(HarvestError, match="differ in: model"):  # the same SAE, with its error term
        run(model, out)
    model.reset_saes()
    model.add_sae(sae, hook_name="blocks.0.hook_mlp_out")
    model.add_perma_hook("blocks.0.hook_attn_out", double)
    with pytest.raises(HarvestError, match="differ in: model"):  # the same SAE and a hook
        run(model, out)
    model.reset_hooks(including_permanent=True)
    resumed = run(model, out)  # the same SAE again: resumed
    assert len(resumed) == ROWS
    reference = run(model, tmp_path / "reference")
    assert files(out) == files(tmp_path / "reference")
    model.reset_saes()
    plain = bridge.harvest.open(whole)
    assert not torch.equal(reference.to_torch(RESID), plain.to_torch(RESID))


def double(tensor, hook):
    return 2 * tensor


# --------------------------------------------------------------- item 7: damaged shards


def flip_last_bit(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_found_on_open_and_on_resume(model, whole, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(whole, damaged)
    flip_last_bit(damaged / "shard-00001.safetensors")
    acts = bridge.harvest.open(damaged)
    assert torch.equal(acts[0]["tokens"], bridge.harvest.open(whole)[0]["tokens"])  # shard 0 is fine
    with pytest.raises(HarvestError, match=r"shard-00001\.safetensors.*checksum"):
        acts[5]
    with pytest.raises(HarvestError, match=r"shard-00001\.safetensors.*checksum"):
        run(model, damaged)
    assert bridge.harvest.open(damaged, verify=False)[5]["row_ids"] == 5  # opted out: read as is

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        run(model, out, after_shard=stop_after(1))
    flip_last_bit(out / "shard-00000.safetensors")
    before = files(out)
    with pytest.raises(HarvestError, match=r"shard-00000\.safetensors.*checksum"):
        run(model, out)
    assert files(out) == before


def test_swapped_shards_are_refused(model, whole, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(whole, swapped)
    first, second = swapped / "shard-00000.safetensors", swapped / "shard-00001.safetensors"
    a, b = first.read_bytes(), second.read_bytes()
    assert len(a) == len(b)
    first.write_bytes(b)
    second.write_bytes(a)
    with pytest.raises(HarvestError, match=r"shard-00000\.safetensors.*rows 4\.\.7.*index.*rows 0\.\.3"):
        bridge.harvest.open(swapped)
    with pytest.raises(HarvestError, match=r"shard-00000\.safetensors"):
        run(model, swapped)


def test_a_damaged_header_names_the_file(whole, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(whole, damaged)
    shard = damaged / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:12] = b"\x00\xff\x00\xff"  # inside the JSON header
    shard.write_bytes(bytes(data))
    with pytest.raises(HarvestError, match=r"shard-00002\.safetensors.*(damaged|not a safetensors)"):
        bridge.harvest.open(damaged)


# --------------------------------------------------------------- items 10, 12: corpora that give nothing


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", r"corpus\.txt.*no full row"),
        ("\n  \n\n", r"corpus\.txt.*no full row"),
        ([], "no full row"),
        (["t1 t2"], r"no full row.*context_length=8"),
        ({"text": "t1 t2 t3 t4 t5 t6 t7 t8 t9 t10"}, r"a dict"),
    ],
)
def test_data_giving_no_row_is_refused_before_anything_is_written(model, tmp_path, data, message):
    if isinstance(data, str):
        (tmp_path / "corpus.txt").write_text(data)
        data = tmp_path / "corpus.txt"
    with pytest.raises((HarvestError, CorpusError), match=message):
        run(model, tmp_path / "out", data=data)
    assert not (tmp_path / "out").exists()


def test_a_corpus_that_is_not_utf8_is_refused_naming_file_and_line(model, gpt2_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    good = "\n".join(texts()) + "\n"
    corpus.write_bytes(b"t1 t2 t3\nt4 t5\nt6 \xff\xfe t7\n" + good.encode())
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=r"corpus\.txt:3.*not UTF-8"):
        run(model, out, data=corpus)
    assert not out.exists()
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_bytes(b'{"text": "t1 t2"}\n{"text": "\xc3\x28"}\n')
    with pytest.raises(CorpusError, match=r"corpus\.jsonl:2.*not UTF-8"):
        run(model, out, data=jsonl)
    code = cli_main(["harvest", str(gpt2_dir), "--data", str(corpus), "--hooks", RESID, "--out", str(out), "--quiet"])
    assert code == 2 and "corpus.txt:3" in capsys.readouterr().err
    assert not out.exists()

    corpus.write_text("t1 t2 t3\nt4 t5\nt6 t7\n" + good)  # fixed: the same directory is used
    assert len(run(model, out, data=corpus)) == ROWS


def test_an_index_left_without_shards_starts_again_with_other_arguments(model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        run(model, out, after_shard=stop_after(0))
    (out / "shard-00000.safetensors").unlink()
    index = json.loads((out / "index.json").read_text())
    index["shards"] = {}
    (out / "index.json").write_text(json.dumps(index))  # as if it died before its first shard
    assert len(run(model, out, data=texts(41))) == ROWS
    assert files(out) == files(run(model, tmp_path / "reference", data=texts(41)).directory)


# --------------------------------------------------------------- item 13: two harvests, one directory


def test_a_second_harvest_into_the_same_directory_is_refused_while_the_first_runs(model, whole, tmp_path):
    out = tmp_path / "out"
    refused = []

    def second(shard_id):
        if shard_id == 0:
            with pytest.raises(HarvestError, match=r"being written by process \d+ on .*; wait for it") as err:
                run(model, out)
            refused.append(str(err.value))

    run(model, out, after_shard=second)
    assert len(refused) == 1
    assert files(out) == files(whole)  # the first was not disturbed, and left no lock behind


# --------------------------------------------------------------- item 14: the reader pickles


def test_the_reader_pickles_after_reading(whole):
    acts = bridge.harvest.open(whole)
    row = acts[5]
    copy = pickle.loads(pickle.dumps(acts))
    assert len(copy) == len(acts)
    assert all(torch.equal(copy[5][k], row[k]) for k in row)


# --------------------------------------------------------------- item 18: killed while writing the first index


def test_a_directory_holding_only_a_temporary_index_is_resumed(model, whole, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tmp-4242-index.json").write_bytes(b'{"format": "bridge-har')  # killed mid-write
    run(model, out)
    assert files(out) == files(whole)


# --------------------------------------------------------------- item 19: resume after a lost rank


def test_resuming_after_a_lost_rank_gives_the_one_process_index(model, whole, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    index = json.loads((out / "index.json").read_text())  # rank 1 of 2 died before committing shard 1
    del index["shards"]["1"]
    index["complete"], index["n_rows"] = False, None
    (out / "index.json").write_text(json.dumps(index, indent=1))
    (out / "shard-00001.safetensors").unlink()
    run(model, out)
    assert files(out) == files(whole)


# --------------------------------------------------------------- item 20: bad arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hooks": []}, "no hook"),
        ({"hooks": ""}, "no hook"),
        ({"batch_size": True}, "batch_size must be a positive int, got True"),
        ({"context_length": True}, "context_length must be a positive int, got True"),
        ({"rows_per_shard": True}, "rows_per_shard must be a positive int, got True"),
        ({"max_tokens": True}, "max_tokens must be an int"),
    ],
)
def test_bad_arguments_are_refused(model, tmp_path, kwargs, message):
    with pytest.raises(HarvestError, match=message):
        run(model, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a worker process imports torch and bridge
def test_a_dataloader_with_spawned_workers_reads_the_harvest(whole):
    acts = bridge.harvest.open(whole)
    acts[0]  # a shard file is open in this process
    loader = torch.utils.data.DataLoader(acts, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    batches = list(loader)
    assert torch.equal(torch.cat([b["row_ids"] for b in batches]), torch.arange(ROWS))
    assert torch.equal(torch.cat([b[RESID] for b in batches]), acts.to_torch(RESID))
