"""``bridge.patching``: batched sweeps against patching by hand, one forward pass per patch, on a tiny GPT-2.

The reference (``one_at_a_time``) is written here from ``run_with_hooks`` alone: for each index, copy the
clean slice into the corrupted activation and run the whole corrupted batch. Every sweep must give the same
numbers (fp32: 1e-5), however it is chunked, and leave no hook or skipped block behind when interrupted.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import bridge
from bridge import patching
from bridge.analysis.patch_runs import parse_memory_budget
from bridge.kernel.errors import BadInputError, BridgeError

ATOL = 1e-5


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from public_api_adapters import GPT2Adapter

    from bridge.testing import examples_of, save_tiny_model

    directory = save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path_factory.mktemp("gpt2p"))
    model = bridge.load(directory, attn_implementation="eager")
    generator = torch.Generator().manual_seed(5)
    clean = torch.randint(1, 100, (2, 6), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 7) % 100 + 1
    corrupted[:, 4] = (clean[:, 4] + 3) % 100 + 1
    _, cache = model.run_with_cache(clean)
    return model, clean, corrupted, cache


def one_at_a_time(model, corrupted, cache, name, axes, edit, metric=logit_diff):
    """The sweep by hand: ``edit(activation, index, clean)`` per index, one ``run_with_hooks`` each."""
    sizes = {"layer": model.cfg.n_layers, "pos": corrupted.shape[1], "dest_pos": corrupted.shape[1]}
    sizes["src_pos"] = corrupted.shape[1]
    sizes["head"] = sizes["head_index"] = model.cfg.n_heads
    shape = [sizes[a] for a in axes]
    out = torch.zeros(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        hook = patching.hook_name(name, index[0])

        def fn(x, hook, index=index):
            x = x.clone()
            edit(x, index, cache[hook.name])
            return x

        with torch.no_grad():
            out[index] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(hook, fn)]))
    return out


def _pos(x, i, c):
    x[:, i[1]] = c[:, i[1]]


def _pos_head(x, i, c):
    x[:, i[1], i[2]] = c[:, i[1], i[2]]


def _head(x, i, c):
    x[:, :, i[1]] = c[:, :, i[1]]


def _pattern_head(x, i, c):
    x[:, i[1]] = c[:, i[1]]


def _pattern_dest(x, i, c):
    x[:, i[1], i[2]] = c[:, i[1], i[2]]


def _pattern_cell(x, i, c):
    x[:, i[1], i[2], i[3]] = c[:, i[1], i[2], i[3]]


SWEEPS = {
    "get_act_patch_resid_pre": ("resid_pre", ("layer", "pos"), _pos),
    "get_act_patch_resid_mid": ("resid_mid", ("layer", "pos"), _pos),
    "get_act_patch_resid_post": ("resid_post", ("layer", "pos"), _pos),
    "get_act_patch_attn_out": ("attn_out", ("layer", "pos"), _pos),
    "get_act_patch_mlp_out": ("mlp_out", ("layer", "pos"), _pos),
    "get_act_patch_attn_head_out_by_pos": ("z", ("layer", "pos", "head"), _pos_head),
    "get_act_patch_attn_head_q_by_pos": ("q", ("layer", "pos", "head"), _pos_head),
    "get_act_patch_attn_head_k_by_pos": ("k", ("layer", "pos", "head"), _pos_head),
    "get_act_patch_attn_head_v_by_pos": ("v", ("layer", "pos", "head"), _pos_head),
    "get_act_patch_attn_head_pattern_by_pos": ("pattern", ("layer", "head_index", "dest_pos"), _pattern_dest),
    "get_act_patch_attn_head_pattern_dest_src_pos": (
        "pattern",
        ("layer", "head_index", "dest_pos", "src_pos"),
        _pattern_cell,
    ),
    "get_act_patch_attn_head_out_all_pos": ("z", ("layer", "head"), _head),
    "get_act_patch_attn_head_q_all_pos": ("q", ("layer", "head"), _head),
    "get_act_patch_attn_head_k_all_pos": ("k", ("layer", "head"), _head),
    "get_act_patch_attn_head_v_all_pos": ("v", ("layer", "head"), _head),
    "get_act_patch_attn_head_pattern_all_pos": ("pattern", ("layer", "head_index"), _pattern_head),
}


@pytest.mark.parametrize("passes", [{}, {"max_batch": 3}], ids=["one-pass-per-layer", "passes-from-later-positions"])
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_sweep_equals_patching_one_at_a_time(setup, sweep, passes):
    """``max_batch=3`` cuts each layer's sweep into passes that begin at later positions (key/value cache)."""
    model, _, corrupted, cache = setup
    name, axes, edit = SWEEPS[sweep]
    mine = getattr(patching, sweep)(model, corrupted, cache, logit_diff, verbose=False, **passes)
    torch.testing.assert_close(mine, one_at_a_time(model, corrupted, cache, name, axes, edit), atol=ATOL, rtol=0)


def test_every_stacks_equal_their_sweeps(setup):
    model, _, corrupted, cache = setup
    every = patching.get_act_patch_attn_head_by_pos_every(model, corrupted, cache, logit_diff, verbose=False)
    assert every.shape == (5, model.cfg.n_layers, corrupted.shape[1], model.cfg.n_heads)
    z = one_at_a_time(model, corrupted, cache, "z", ("layer", "pos", "head"), _pos_head)
    pattern = one_at_a_time(model, corrupted, cache, "pattern", ("layer", "head_index", "dest_pos"), _pattern_dest)
    torch.testing.assert_close(every[0], z, atol=ATOL, rtol=0)
    torch.testing.assert_close(every[4], pattern.transpose(1, 2), atol=ATOL, rtol=0)
    block = patching.get_act_patch_block_every(model, corrupted, cache, logit_diff, verbose=False)
    mlp = one_at_a_time(model, corrupted, cache, "mlp_out", ("layer", "pos"), _pos)
    torch.testing.assert_close(block[2], mlp, atol=ATOL, rtol=0)


@pytest.mark.parametrize("options", [{"max_batch": 1}, {"max_batch": 5}, {"memory_budget": 1}, {"skip": False}])
def test_chunking_and_skipping_change_nothing(setup, options):
    model, _, corrupted, cache = setup
    expected = patching.get_act_patch_attn_head_q_by_pos(model, corrupted, cache, logit_diff, verbose=False)
    found = patching.get_act_patch_attn_head_q_by_pos(model, corrupted, cache, logit_diff, verbose=False, **options)
    torch.testing.assert_close(found, expected, atol=ATOL, rtol=0)


def test_a_custom_setter_patches_as_written(setup):
    """A setter bridge does not know (here: add half the clean-minus-corrupted change) runs whole passes."""
    model, _, corrupted, cache = setup
    _, corrupted_cache = model.run_with_cache(corrupted)

    def half_way(activation, index, clean):
        layer, pos = index
        done = corrupted_cache[f"blocks.{layer}.hook_resid_mid"][:, pos]
        activation[:, pos] = done + 0.5 * (clean[:, pos] - done)
        return activation

    mine = patching.generic_activation_patch(
        model, corrupted, cache, logit_diff, half_way, "resid_mid", ("layer", "pos"), verbose=False
    )

    def edit(x, index, clean):
        half_way(x, index, clean)

    torch.testing.assert_close(
        mine, one_at_a_time(model, corrupted, cache, "resid_mid", ("layer", "pos"), edit), atol=ATOL, rtol=0
    )


def test_index_df_rows_in_their_order(setup):
    pd = pytest.importorskip("pandas")
    model, _, corrupted, cache = setup
    rows = pd.DataFrame({"layer": [1, 0, 1], "pos": [4, 1, 0], "head": [2, 0, 1]})
    mine = patching.generic_activation_patch(
        model,
        corrupted,
        cache,
        logit_diff,
        patching.layer_pos_head_vector_patch_setter,
        "z",
        index_df=rows,
        verbose=False,
    )
    full = one_at_a_time(model, corrupted, cache, "z", ("layer", "pos", "head"), _pos_head)
    torch.testing.assert_close(mine, torch.stack([full[1, 4, 2], full[0, 1, 0], full[1, 0, 1]]), atol=ATOL, rtol=0)
    values, frame = patching.get_act_patch_resid_pre(
        model, corrupted, cache, logit_diff, return_index_df=True, verbose=False
    )
    assert list(frame.columns) == ["layer", "pos"] and len(frame) == values.numel()


def test_per_example_results_baseline_and_metric_mappings(setup):
    model, clean, corrupted, cache = setup

    def per_example(logits):
        return logits[:, -1, 3] - logits[:, -1, 5]

    result = patching.get_act_patch_attn_out(
        model, corrupted, cache, per_example, reduce="none", baseline=True, verbose=False
    )
    assert result.values.shape == (model.cfg.n_layers, corrupted.shape[1], corrupted.shape[0])
    expected = one_at_a_time(model, corrupted, cache, "attn_out", ("layer", "pos"), _pos)
    torch.testing.assert_close(result.mean(), expected, atol=ATOL, rtol=0)
    with torch.no_grad():
        corrupted_value, clean_value = per_example(model(corrupted)), per_example(model(clean))
    torch.testing.assert_close(result.baseline, corrupted_value, atol=ATOL, rtol=0)
    torch.testing.assert_close(result.effect(), result.values - corrupted_value, atol=ATOL, rtol=0)
    normalized = result.normalized(clean_value)
    torch.testing.assert_close(normalized, (result.values - corrupted_value) / (clean_value - corrupted_value))
    assert result.stderr().shape == expected.shape
    mapped = patching.get_act_patch_attn_out(
        model, corrupted, cache, {"diff": per_example, "three": lambda x: x[:, -1, 3]}, reduce="mean", verbose=False
    )
    assert mapped.metric_names == ["diff", "three"] and mapped.values.shape[0] == 2
    torch.testing.assert_close(mapped["diff"].values, expected, atol=ATOL, rtol=0)


def test_bad_arguments_raise_bridge_errors(setup):
    model, _, corrupted, cache = setup
    with pytest.raises(BadInputError, match="reduce must be one of"):
        patching.get_act_patch_resid_pre(model, corrupted, cache, logit_diff, reduce="sum")
    with pytest.raises(BadInputError, match="must return a scalar"):
        patching.get_act_patch_resid_pre(model, corrupted, cache, lambda x: x[:, -1, 0], verbose=False)
    with pytest.raises(BadInputError, match="not in the clean cache"):
        patching.get_act_patch_resid_pre(model, corrupted, {}, logit_diff, verbose=False)
    with pytest.raises(BadInputError, match="memory_budget"):
        patching.get_act_patch_resid_pre(model, corrupted, cache, logit_diff, memory_budget="lots")
    model.train()
    try:
        with pytest.raises(BridgeError, match="eval mode"):
            patching.get_act_patch_resid_pre(model, corrupted, cache, logit_diff)
    finally:
        model.eval()


def test_parse_memory_budget():
    assert parse_memory_budget("512MiB") == 512 * 2**20
    assert parse_memory_budget("2GB") == 2 * 10**9
    assert parse_memory_budget(1000) == 1000
    with pytest.raises(BadInputError):
        parse_memory_budget(-1)


def _clean_state(model) -> bool:
    hooks_left = [n for n, h in model.hook_dict.items() if h.fwd_hooks or h.bwd_hooks]
    overrides = [b for b in model.hf_model.transformer.h if "forward" in b.__dict__]
    return not hooks_left and not overrides


def test_ctrl_c_leaves_no_hook_and_no_skipped_block(setup):
    """An interrupt inside a pass (here from the metric, as Ctrl-C would arrive) propagates and leaves nothing
    attached; the next sweep gives the same numbers as before."""
    model, _, corrupted, cache = setup
    calls = []

    def interrupted(logits):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return logit_diff(logits)

    def hook_that_interrupts(x, hook):
        raise KeyboardInterrupt

    expected = patching.get_act_patch_resid_mid(model, corrupted, cache, logit_diff, verbose=False)
    with pytest.raises(KeyboardInterrupt):
        patching.get_act_patch_resid_mid(model, corrupted, cache, interrupted, verbose=False, max_batch=2)
    assert _clean_state(model)
    model.add_hook("blocks.1.hook_mlp_out", hook_that_interrupts)
    try:
        with pytest.raises(KeyboardInterrupt):
            patching.get_act_patch_resid_mid(model, corrupted, cache, logit_diff, verbose=False)
    finally:
        model.reset_hooks()
    assert _clean_state(model)
    found = patching.get_act_patch_resid_mid(model, corrupted, cache, logit_diff, verbose=False)
    torch.testing.assert_close(found, expected, atol=0, rtol=0)


def test_progress_bar_only_when_verbose(setup, capsys):
    model, _, corrupted, cache = setup
    patching.get_act_patch_resid_pre(model, corrupted, cache, logit_diff, verbose=False)
    assert capsys.readouterr().err == ""
    patching.get_act_patch_resid_pre(model, corrupted, cache, logit_diff, verbose=True)
    assert "patching resid_pre" in capsys.readouterr().err


def test_bridge_patching_is_importable_by_its_name():
    import bridge.patching as by_name

    assert by_name is patching is bridge.analysis.patching
