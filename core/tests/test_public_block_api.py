"""The public block/component API, proven by adapters written with public names only (``public_api_adapters``:
GPT-2, Llama, Qwen3, Nemotron, Phi, GPT-J, BERT, Jamba) and by OPT pre- and post-norm (the ``bridge new-plugin``
template). Each passes the conformance kit on both attention paths; interventions are compared with weight
surgery on the HF reference model; component-map mistakes raise errors naming the adapter and the path; the
generated plugin's own test suite (the one every first-party family runs) passes with no warning."""

from __future__ import annotations

import ast
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from public_api_adapters import EXAMPLES, GPTJExamples, PhiAdapter, PhiExamples

import bridge
from bridge import BlockSpec, Spec
from bridge.app.cli import main as cli_main
from bridge.app.new_plugin import write_plugin
from bridge.kernel.components import MLP, Norm, ParallelBlock
from bridge.kernel.errors import BridgeError, ComponentMapError
from bridge.testing import build_tiny_model, conformance_test, is_plain, make_pair

HERE = Path(__file__).parent
TOL = 1e-5

#: ``bridge new-plugin opt``, written at collection so its examples can parametrize the kit; importable from here.
PLUGIN_ROOT = write_plugin("opt", tempfile.mkdtemp(prefix="bridge-new-plugin-"))
sys.path.insert(0, str(PLUGIN_ROOT / "src"))
from bridge_opt.examples import OptExamples  # noqa: E402


class PostNormOptExamples(OptExamples):
    """The generated adapter on OPT-350m's post-norm layout (also the template's conformance variant)."""

    @classmethod
    def example_config(cls, architecture=None):
        config = super().example_config(architecture)
        config.do_layer_norm_before = False
        return config

    @classmethod
    def conformance_configs(cls):
        return {}


@pytest.fixture(scope="session")
def opt_adapters():
    """The generated plugin's examples, and a post-norm variant of them."""
    return OptExamples, PostNormOptExamples


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    dirs: dict[str, Path] = {}

    def directory(adapter) -> Path:
        if adapter.__name__ not in dirs:
            dirs[adapter.__name__] = tmp_path_factory.mktemp(adapter.__name__)
        return dirs[adapter.__name__]

    return directory


def private_names(source: str) -> list[str]:
    """Every imported or referenced name starting with ``_`` (dunders aside) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names] + (node.module or "").split(".")
        found += [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    return found


def test_adapters_use_public_names_only():
    assert private_names((HERE / "public_api_adapters.py").read_text()) == []
    assert private_names((PLUGIN_ROOT / "src" / "bridge_opt" / "adapters.py").read_text()) == []
    assert sorted(private_names("x._hidden_name\nfrom bridge.seam import _additive")) == ["_additive", "_hidden_name"]


# ----------------------------------------------------------------- the kit on every public-API adapter

test_conformance = conformance_test([*EXAMPLES, PostNormOptExamples])


def test_new_plugin_output_passes_the_suite_families_run():
    """The generated distribution's own tests (the kit on both paths, the lifecycle kit, the hypothesis
    properties) pass with no warning, run as its author would: not installed (its ``src`` on the path), no other
    plugin loaded."""
    root = PLUGIN_ROOT
    files = {p.name for p in root.rglob("*") if p.is_file()}
    assert files >= {
        "pyproject.toml",
        "README.md",
        "adapters.py",
        "examples.py",
        "plugin.py",
        "__init__.py",
        "conftest.py",
        "test_opt_conformance.py",
        "test_opt_lifecycle.py",
        "test_opt_properties.py",
    }
    assert '[project.entry-points.bridge]\nopt = "bridge_opt.plugin"' in (root / "pyproject.toml").read_text()
    assert "`blocks.{i}.attn.hook_z`" in (root / "README.md").read_text()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not variants", "tests"],
        cwd=root,
        env={**environment, "PYTHONPATH": str(root / "src"), "BRIDGE_LOAD_PLUGINS": ""},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]  # e.g. "31 passed, 6 deselected in 40s": nothing failed or warned
    assert "warning" not in run.stdout.lower() and "failed" not in summary and "skipped" not in summary, summary
    assert int(summary.split()[0]) >= 30, summary


def test_new_plugin_claims_no_architecture_until_edited():
    """Installed unedited, the generated plugin takes no architecture from another plugin."""
    from bridge_opt import ADAPTERS

    assert [a.__name__ for a in ADAPTERS] == ["OptAdapter"] and ADAPTERS[0].architectures == ()


def test_new_plugin_refuses_bad_names_and_existing_directories(tmp_path, capsys):
    assert cli_main(["new-plugin", "My Family", "--into", str(tmp_path)]) == 2
    assert "lowercase letters" in capsys.readouterr().err
    assert cli_main(["new-plugin", "my-family", "--into", str(tmp_path)]) == 0
    assert (tmp_path / "bridge-my-family" / "src" / "bridge_my_family" / "adapters.py").exists()
    assert cli_main(["new-plugin", "my-family", "--into", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


# ----------------------------------------------------------------- interventions vs weight surgery on HF


def logits_of(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens).logits


@pytest.mark.parametrize("wired", [False, True], ids=["hf-block", "bridge-wiring"])
def test_shared_norm_patch_reaches_attention_and_mlp(wired, saved):
    """Doubling ``ln1.hook_normalized`` (the normalized input, before the norm's weight and bias) is doubling the
    shared norm's weight: both sublayers read the patched norm."""
    pair = make_pair(PhiExamples, None, "native", directory=saved(PhiExamples))
    tokens = pair.tokens()
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.layers[1].input_layernorm.weight.mul_(2)
    hooks = [("blocks.1.ln1.hook_normalized", lambda t, hook: 2 * t)]
    if wired:  # a block hook switches the block's forward to the bridge's wiring
        hooks.append(("blocks.1.hook_mlp_out", lambda t, hook: t))
    got = pair.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    assert (got - logits_of(pair.reference, tokens)).abs().max() > 1e-2  # the patch matters
    torch.testing.assert_close(got, logits_of(surgery, tokens), atol=TOL, rtol=TOL)


def test_shared_norm_block_runs_its_norm_once(saved):
    pair = make_pair(PhiExamples, None, "native", directory=saved(PhiExamples))
    calls = []
    handle = pair.bridge.blocks[0].hf_modules["ln1"].register_forward_hook(lambda *_: calls.append(1))
    pair.bridge.run_with_cache(pair.tokens(), names_filter=lambda n: n == "blocks.0.hook_resid_post")
    handle.remove()
    assert len(calls) == 1


def test_inline_attention_rot_q_patch_is_used(saved):
    """GPT-J's rotary is linear in q: doubling ``hook_rot_q`` is doubling ``q_proj``'s weight."""
    pair = make_pair(GPTJExamples, None, "native", directory=saved(GPTJExamples))
    tokens = pair.tokens()
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.transformer.h[0].attn.q_proj.weight.mul_(2)
    got = pair.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_rot_q", lambda t, hook: 2 * t)])
    assert (got - logits_of(pair.reference, tokens)).abs().max() > 1e-4
    torch.testing.assert_close(got, logits_of(surgery, tokens), atol=TOL, rtol=TOL)


def test_inline_attention_pattern_is_hf_eager_attentions(saved):
    pair = make_pair(GPTJExamples, None, "native", directory=saved(GPTJExamples))
    tokens = pair.tokens()
    _, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    reference = pair.reference(tokens, output_attentions=True).attentions
    for layer in range(2):
        torch.testing.assert_close(cache["pattern", layer], reference[layer], atol=TOL, rtol=TOL)


def test_post_norm_resid_mid_patch_matches_bias_surgery(opt_adapters, saved):
    """Adding ``delta`` at ``hook_resid_mid`` (before the post-norm) is adding it to ``out_proj``'s bias."""
    adapter = opt_adapters[1]
    pair = make_pair(adapter, None, "native", directory=saved(adapter))
    tokens = pair.tokens()
    delta = torch.randn(32, generator=torch.Generator().manual_seed(3))
    surgery = copy.deepcopy(pair.reference)
    with torch.no_grad():
        surgery.model.decoder.layers[0].self_attn.out_proj.bias.add_(delta)
    got = pair.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_mid", lambda t, hook: t + delta)])
    assert (got - logits_of(pair.reference, tokens)).abs().max() > 1e-3
    torch.testing.assert_close(got, logits_of(surgery, tokens), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("name", ["blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "blocks.0.ln2.hook_normalized"])
@pytest.mark.parametrize("post_norm", [False, True])
def test_flattened_mlp_hooks_keep_batch_and_position(name, post_norm, opt_adapters, saved):
    """HF's OPT runs its MLP and ``final_layer_norm`` on ``[b·p, d]``; alone, their hooks still see ``[b, p, d]``."""
    adapter = opt_adapters[int(post_norm)]
    pair = make_pair(adapter, None, "native", directory=saved(adapter))
    tokens = pair.tokens(batch=3, pos=5)
    _, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n == name)
    assert cache[name].shape[:2] == (3, 5)


def test_cache_analysis_refuses_post_norm_blocks(opt_adapters, saved):
    adapter = opt_adapters[1]
    pair = make_pair(adapter, None, "native", directory=saved(adapter))
    _, cache = pair.bridge.run_with_cache(pair.tokens())
    with pytest.raises(BridgeError, match="normalizes the residual stream itself"):
        cache.decompose_resid()


def test_return_type_hidden_is_the_final_residual_not_project_out(opt_adapters):
    """OPT with ``word_embed_proj_dim != hidden_size``: "hidden" is ``final_layer_norm``'s output
    ``[b, p, d_model]``, not what ``project_out`` makes of it (HF's ``hidden_states[-1]``)."""
    config = opt_adapters[0].example_config()
    config.word_embed_proj_dim = 16
    hf_model = build_tiny_model(config)
    reference = copy.deepcopy(hf_model)
    final = []
    reference.model.decoder.final_layer_norm.register_forward_hook(lambda _m, _a, out: final.append(out))
    tokens = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(0))
    reference(tokens)
    model = bridge.wrap(hf_model, adapter=opt_adapters[0].adapter)
    hidden = model(tokens, return_type="hidden")
    assert hidden.shape == (2, 6, 32)
    torch.testing.assert_close(hidden, final[-1], atol=TOL, rtol=TOL)


# ----------------------------------------------------------------- component-map checks


def broken_phi(**children: Spec | None) -> type:
    class BrokenPhi(PhiAdapter):
        def component_map(self, cfg):
            cmap = super().component_map(cfg)
            merged = {k: v for k, v in {**cmap.block.children, **children}.items() if v is not None}
            kind = ParallelBlock if "ln2" in children else cmap.block.kind
            return type(cmap)(**{**cmap.__dict__, "block": BlockSpec(kind, merged, cmap.block.extra_paths)})

    return BrokenPhi


@pytest.mark.parametrize(
    ("children", "says"),
    [
        ({"mlp": Spec(MLP, "", {"pre": "fc1", "out": "fc2"})}, ["BrokenPhi", "block child 'mlp'", "empty path"]),
        ({"ln2": Spec(Norm, "input_layernorm")}, ["BrokenPhi", "'ln1' and 'ln2'", "'input_layernorm'"]),
        ({"attn": Spec(MLP, "self_atn", {"pre": "a", "out": "b"})}, ["BrokenPhi", "'self_atn'", "self_attn"]),
    ],
    ids=["empty-path", "module-claimed-twice", "missing-path"],
)
def test_component_map_mistakes_are_named(children, says, saved):
    adapter = broken_phi(**children)
    hf_model = build_tiny_model(PhiExamples.example_config())
    with pytest.raises(ComponentMapError) as err:
        bridge.wrap(hf_model, adapter=adapter)
    for text in says:
        assert text in str(err.value)
    assert is_plain(hf_model)


def test_example_config_without_architectures_is_named():
    class NoArchitectures(PhiExamples):
        @classmethod
        def example_config(cls, architecture=None):
            config = super().example_config(architecture)
            config.architectures = None
            return config

    with pytest.raises(ComponentMapError, match=r"NoArchitectures\.example_config.*architectures=\['PhiForCausalLM'\]"):
        make_pair(NoArchitectures)


def test_block_refuses_an_empty_path_it_does_not_compute():
    hf_model = build_tiny_model(PhiExamples.example_config())
    spec = BlockSpec(ParallelBlock, {"mlp": Spec(MLP, "", {"pre": "mlp.fc1", "out": "mlp.fc2"})})
    with pytest.raises(BridgeError, match="inline_children"):
        spec.build(hf_model.model.layers[0], bridge.config_from_hf(hf_model.config))


# ----------------------------------------------------------------- extension points, by their fixture adapters


def test_input_hooks_only_where_the_wiring_offers_them(saved):
    """``offers_input_hooks``: a pre-norm wiring's ``ln1``/``ln2`` feed attention and MLP, so the opt-in input hooks
    sit on them; a post-norm wiring (BERT's, ``PostNormBlock``) and a mixer layer (Jamba's) offer none."""
    from public_api_adapters import BertExamples, JambaExamples, LlamaExamples

    hooks = {e.__name__: set(make_pair(e, directory=saved(e)).bridge.hook_dict) for e in (LlamaExamples, BertExamples)}
    assert {"blocks.0.hook_attn_in", "blocks.0.hook_q_input", "blocks.0.hook_mlp_in"} <= hooks["LlamaExamples"]
    assert not {h for h in hooks["BertExamples"] if h.endswith(("_input", "attn_in", "mlp_in"))}
    jamba = set(make_pair(JambaExamples, directory=saved(JambaExamples)).bridge.hook_dict)
    assert "blocks.1.hook_q_input" in jamba and "blocks.0.hook_q_input" not in jamba  # layer 0 is a Mamba layer


def test_layer_kinds_build_each_layer_from_its_own_spec(saved):
    """Jamba's ``LayerKinds``: Mamba layers get the mixer wiring, attention layers the attention one, MoE layers
    core's ``MoE``; every layer was checked against its own spec when the bridge was built."""
    from public_api_adapters import JambaExamples, MixerBlock

    from bridge.components import MoE, SequentialBlock

    model = make_pair(JambaExamples, directory=saved(JambaExamples)).bridge
    kinds = [(type(b).__name__, type(b.mlp).__name__) for b in model.blocks]
    assert kinds == [
        (MixerBlock.__name__, "MLP"),
        (SequentialBlock.__name__, MoE.__name__),
        (MixerBlock.__name__, "MLP"),
        (SequentialBlock.__name__, MoE.__name__),
    ]


def test_attention_called_by_a_submodule_fires_its_hooks_at_the_seam(saved):
    """BERT's ``BertSelfAttention`` calls the attention function while ``BertAttention`` holds the output
    projection: with ``calls_attention="self"`` the pattern is HF's eager attentions."""
    from public_api_adapters import BertExamples

    pair = make_pair(BertExamples, directory=saved(BertExamples))
    tokens = pair.tokens()
    _, cache = pair.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    expected = pair.reference(tokens, output_attentions=True).attentions
    for layer in range(2):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], expected[layer], atol=TOL, rtol=0)
