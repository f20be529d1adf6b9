"""The plugin manager: hookspecs, adapter registration, resolution and its errors."""

import inspect
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from public_api_adapters import GPT2Adapter, GPT2Examples

import bridge
from bridge.kernel import hookspecs
from bridge.kernel.errors import (
    AdapterConflictWarning,
    PluginHookError,
    PluginHookWarning,
    PluginLoadWarning,
    UnknownArchitectureError,
)
from bridge.kernel.examples import Examples
from bridge.kernel.plugins import PluginInfo, PluginRegistry
from bridge.testing import build_tiny_model

HOOKSPECS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "bridge_spec")]


def test_every_hookspec_is_documented_and_tested():
    assert set(HOOKSPECS) == {
        "register_adapters",
        "match_adapter",
        "configure",
        "bridge_ready",
        "register_examples",
        "bench_configs",
        "demo",
    }
    test_sources = "".join(p.read_text() for p in Path(__file__).parents[2].glob("*/tests/*.py"))
    test_sources += "".join(p.read_text() for p in Path(__file__).parents[2].glob("tests/*.py"))
    for name in HOOKSPECS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Called" in doc and "return" in doc.lower() and "Example" in doc, f"hookspec {name} lacks documentation"
        assert f"def test_hookspec_{name}" in test_sources, f"hookspec {name} has no test_hookspec_{name}"


class Renamed(GPT2Adapter):
    architectures = ()
    model_types = ("my-renamed-gpt2",)


class Plugin:
    def __init__(self, *adapters):
        self.adapters = adapters
        self.configured = []
        self.ready = []

    @bridge.hookimpl
    def register_adapters(self, register):
        for adapter in self.adapters:
            register(adapter)


def test_hookspec_register_adapters_by_architecture_and_model_type():
    registry = PluginRegistry()
    registry.register_plugin(Plugin(GPT2Adapter))
    config = GPT2Examples.example_config()
    assert registry.resolve(config) is GPT2Adapter
    config.architectures = ["SomethingElse"]
    assert registry.resolve(config) is GPT2Adapter  # via model_type "gpt2"


class ExamplesPlugin:
    def __init__(self, *registered):
        self.registered = registered

    @bridge.hookimpl
    def register_examples(self, register):
        for examples in self.registered:
            register(examples)


class RenamedExamples(Examples):
    adapter = Renamed

    @classmethod
    def example_config(cls, architecture=None):
        config = GPT2Examples.example_config()
        config.model_type = "my-renamed-gpt2"
        return config


def test_hookspec_register_examples_is_asked_lazily_and_a_broken_one_is_skipped():
    """Examples are collected at the first request, not at registration (``bridge.load`` never asks); a plugin
    registering something that is not an ``Examples`` class is skipped with a warning naming it, the rest kept."""
    asked = []

    class Counting(ExamplesPlugin):
        @bridge.hookimpl
        def register_examples(self, register):
            asked.append(True)
            super().register_examples(register)

    class Junk:
        @bridge.hookimpl
        def register_examples(self, register):
            register(GPT2Adapter)  # an adapter, not its examples

    registry = PluginRegistry()
    registry.register_plugin(Counting(RenamedExamples), PluginInfo("acme-examples", "1", "ex = acme", ""))
    registry.register_plugin(Junk(), PluginInfo("acme-junk", "1", "junk = acme_junk", ""))
    assert asked == []
    with pytest.warns(PluginHookWarning, match=r"acme-junk.*register_examples.*not an Examples subclass"):
        assert registry.examples_for(Renamed) is RenamedExamples
    assert registry.examples_for(GPT2Adapter) is None
    assert registry.examples_for(Renamed) is RenamedExamples and asked == [True]  # collected once


def test_hookspec_bench_configs_are_merged_across_plugins():
    class Bench:
        def __init__(self, configs):
            self.configs = configs

        @bridge.hookimpl
        def bench_configs(self):
            return self.configs

    registry = PluginRegistry()
    registry.register_plugin(Bench({"a": 1, "b": 2}), PluginInfo("acme-a", "1", "a = acme_a", ""))
    registry.register_plugin(Bench(["not", "a", "dict"]), PluginInfo("acme-bad", "1", "b = acme_bad", ""))
    with pytest.warns(PluginHookWarning, match="acme-bad"):
        assert registry.bench_configs() == {"a": 1, "b": 2}
    assert "fixture gpt2 (2L, d32)" in bridge.get_registry().bench_configs()  # the fixture plugin's, as registered


def test_hookspec_demo_first_answer_wins_and_none_passes(tmp_path, capsys):
    """``bridge demo`` asks plugins first; one answering ``None`` passes, a ``BridgeError`` reaches the user as is."""

    class Passing:
        @bridge.hookimpl
        def demo(self, model, png, out, default_png):
            return None

    class Claiming:
        @bridge.hookimpl
        def demo(self, model, png, out, default_png):
            out(f"claimed {type(model.adapter).__name__}")
            return {"claimed": True}

    registry = PluginRegistry()
    registry.register_plugin(Passing(), PluginInfo("acme-pass", "1", "p = acme_pass", ""))
    assert registry.call_first("demo", model=None, png=None, out=print, default_png=False) is None
    registry.register_plugin(Claiming(), PluginInfo("acme-claim", "1", "c = acme_claim", ""))
    model = bridge.wrap(build_tiny_model(GPT2Examples.example_config()))
    assert registry.call_first("demo", model=model, png=None, out=print, default_png=False) == {"claimed": True}
    assert "claimed GPT2Adapter" in capsys.readouterr().out

    class Refusing:
        @bridge.hookimpl
        def demo(self, model, png, out, default_png):
            raise bridge.BridgeError("this model is not one I can demonstrate")

    refusing = PluginRegistry()
    refusing.register_plugin(Refusing(), PluginInfo("acme-refuse", "1", "r = acme_refuse", ""))
    with pytest.raises(bridge.BridgeError, match="not one I can demonstrate"):
        refusing.call_first("demo", model=model, png=None, out=print, default_png=False)


def test_hookspec_match_adapter_claims_unnamed_models():
    class Matcher:
        @bridge.hookimpl
        def match_adapter(self, hf_config):
            return GPT2Adapter if hf_config.model_type == "my-renamed-gpt2" else None

    registry = PluginRegistry()
    config = GPT2Examples.example_config()
    config.architectures = ["MyRenamedGPT2"]
    config.model_type = "my-renamed-gpt2"
    with pytest.raises(UnknownArchitectureError):
        registry.resolve(config)
    registry.register_plugin(Matcher())
    assert registry.resolve(config) is GPT2Adapter


def test_hookspec_configure_and_bridge_ready_run_on_wrap(monkeypatch):
    seen = {}

    class Observer:
        @bridge.hookimpl
        def configure(self, config, hf_config):
            config.extra["seen_vocab"] = hf_config.vocab_size

        @bridge.hookimpl
        def bridge_ready(self, bridge):
            seen["bridge"] = bridge

    registry = bridge.get_registry()
    registry.pm.register(Observer(), name="observer")
    try:
        model = bridge.wrap(build_tiny_model(GPT2Examples.example_config()))
    finally:
        registry.pm.unregister(name="observer")
    assert model.cfg.extra["seen_vocab"] == 128
    assert seen["bridge"] is model


def test_hookspec_bridge_ready_failure_leaves_nothing_attached():
    class Failing:
        @bridge.hookimpl
        def bridge_ready(self, bridge):
            bridge.add_hook("blocks.0.hook_resid_pre", lambda t, hook: None, is_permanent=True)
            raise RuntimeError("plugin bug")

    hf = build_tiny_model(GPT2Examples.example_config())
    registry = bridge.get_registry()
    registry.pm.register(Failing(), name="failing")
    try:
        with pytest.raises(PluginHookError, match=r"plugin failing .*`bridge_ready` hook: RuntimeError: plugin bug"):
            bridge.wrap(hf)
    finally:
        registry.pm.unregister(name="failing")
    assert hf.config._attn_implementation == "sdpa"
    assert not any("forward" in m.__dict__ or m._forward_hooks or m._forward_pre_hooks for m in hf.modules())
    bridge.wrap(hf)  # and it can be wrapped again


def test_duplicate_adapters_pick_a_deterministic_winner_and_warn():
    class ThirdParty(GPT2Adapter):
        pass

    class Overriding(GPT2Adapter):
        priority = 10

    registry = PluginRegistry()
    registry.register_plugin(Plugin(GPT2Adapter), PluginInfo("bridge-gpt2", "0", "x", "disabled"))
    with pytest.warns(AdapterConflictWarning, match=r"ThirdParty.*using .*GPT2Adapter from bridge-gpt2"):
        registry.register_plugin(Plugin(ThirdParty), PluginInfo("acme-gpt2", "0", "y", "disabled"))
    assert registry.resolve(GPT2Examples.example_config()) is GPT2Adapter
    with pytest.warns(AdapterConflictWarning, match="using .*Overriding from acme-fast"):
        registry.register_plugin(Plugin(Overriding), PluginInfo("acme-fast", "0", "z", "disabled"))
    assert registry.resolve(GPT2Examples.example_config()) is Overriding


def test_unknown_architecture_names_the_distribution_to_install():
    registry = PluginRegistry()
    config = GPT2Examples.example_config()
    with pytest.raises(UnknownArchitectureError, match=r"pip install bridge-gpt2.*Installed plugins: none"):
        registry.resolve(config)
    from transformers import LlamaConfig

    with pytest.raises(UnknownArchitectureError, match="pip install bridge-llama"):
        registry.resolve(LlamaConfig(architectures=["LlamaForCausalLM"]))
    custom = GPT2Examples.example_config()
    custom.architectures, custom.model_type = ["Weird"], "weird"
    with pytest.raises(UnknownArchitectureError, match="knows no plugin"):
        registry.resolve(custom)


def test_plugin_whose_registration_raises_is_skipped_with_a_warning():
    class Broken:
        @bridge.hookimpl
        def register_adapters(self, register):
            register(object)

    registry = PluginRegistry()
    with pytest.warns(bridge.kernel.errors.PluginLoadWarning, match="skipping plugin"):
        info = registry.register_plugin(Broken())
    assert info.status == "broken" and "Adapter subclass" in info.error
    registry.register_plugin(Plugin(GPT2Adapter))
    assert registry.resolve(GPT2Examples.example_config()) is GPT2Adapter


def test_trace_plugins_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("BRIDGE_TRACE_PLUGINS", "1")
    registry = PluginRegistry()
    registry.register_plugin(Plugin(GPT2Adapter))
    assert "register_adapters" in capsys.readouterr().err


def test_explicit_adapter_overrides_resolution(gpt2_dir):
    model = bridge.load(gpt2_dir, adapter=GPT2Adapter)
    assert isinstance(model.adapter, GPT2Adapter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.tensor([[0, 1]]))


# ---------------------------------------------------------------- isolation of third-party plugins

ADAPTER_MODULE = """
import bridge
from public_api_adapters import GPT2Adapter

class {name}(GPT2Adapter):
    architectures = ("{name}ForCausalLM",)
    model_types = ()

@bridge.hookimpl
def register_adapters(register):
    register({name})
"""


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """Install fake distributions: ``fake_site({"acme": {"ep": "module source"}})`` writes each
    distribution's metadata and entry-point modules and puts them on ``sys.path``."""

    def install(distributions: dict[str, dict[str, str]]) -> None:
        site = tmp_path / f"site-{uuid.uuid4().hex[:8]}"
        site.mkdir()
        for dist, modules in distributions.items():
            info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
            lines = []
            for ep, source in modules.items():
                module = f"fake_{dist.replace('-', '_')}_{ep}_{uuid.uuid4().hex[:8]}"
                (site / f"{module}.py").write_text(textwrap.dedent(source))
                lines.append(f"{ep} = {module}")
            (info / "entry_points.txt").write_text("[bridge]\n" + "\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setenv("BRIDGE_LOAD_PLUGINS", ",".join(distributions))

    return install


def config_for(architecture):
    config = GPT2Examples.example_config()
    config.architectures, config.model_type = [architecture], "not-registered"
    return config


def test_plugin_raising_systemexit_or_any_baseexception_at_import_is_skipped(fake_site):
    fake_site(
        {
            "bridge-exits": {"exits": "raise SystemExit(3)"},
            "bridge-boom": {"boom": "class Boom(BaseException):\n    pass\nraise Boom('not an Exception')"},
            "bridge-exits-late": {"late": ADAPTER_MODULE.format(name="AcmeLate") + "    raise SystemExit(5)\n"},
            "acme-good": {"good": ADAPTER_MODULE.format(name="AcmeGood")},
        }
    )
    registry = PluginRegistry()
    with pytest.warns(PluginLoadWarning) as record:
        registry.load_entry_points()
    messages = "\n".join(str(w.message) for w in record)
    assert "skipping plugin bridge-exits" in messages and "SystemExit: 3" in messages
    assert "skipping plugin bridge-boom" in messages and "Boom: not an Exception" in messages
    assert "skipping plugin bridge-exits-late" in messages and "register_adapters failed: SystemExit: 5" in messages
    status = {p.distribution: p.status for p in registry.plugins if p.status != "disabled"}
    assert status == {
        "bridge-exits": "broken",
        "bridge-boom": "broken",
        "bridge-exits-late": "broken",
        "acme-good": "loaded",
    }
    assert registry.resolve(config_for("AcmeGoodForCausalLM")).__name__ == "AcmeGood"
    with pytest.raises(UnknownArchitectureError, match=r"broken .*bridge-exits"):
        registry.resolve(config_for("Nothing"))
    with pytest.raises(UnknownArchitectureError):  # registered before it exited: not kept
        registry.resolve(config_for("AcmeLateForCausalLM"))


def test_keyboard_interrupt_during_plugin_import_still_interrupts(fake_site):
    fake_site({"bridge-interrupted": {"ki": "raise KeyboardInterrupt"}})
    with pytest.raises(KeyboardInterrupt):
        PluginRegistry().load_entry_points()


def test_distribution_with_several_entry_points_keeps_each_working(fake_site):
    half_registered = ADAPTER_MODULE.format(name="AcmeHalf") + "    raise RuntimeError('after registering')\n"
    fake_site(
        {
            "acme-multi": {
                "a": ADAPTER_MODULE.format(name="AcmeA"),
                "b": ADAPTER_MODULE.format(name="AcmeB"),
                "c": "raise ImportError('entry point c is broken')",
                "d": half_registered,
            }
        }
    )
    registry = PluginRegistry()
    with pytest.warns(PluginLoadWarning) as record:
        registry.load_entry_points()
    assert len(record) == 2
    infos = {p.entry_point.partition(" = ")[0]: p for p in registry.plugins}
    assert [infos[ep].status for ep in "abcd"] == ["loaded", "loaded", "broken", "broken"]
    assert [a.__name__ for a in infos["a"].adapters] == ["AcmeA"]
    assert [a.__name__ for a in infos["b"].adapters] == ["AcmeB"]
    assert infos["d"].adapters == [] and "register_adapters failed" in str(record[1].message)
    assert registry.resolve(config_for("AcmeAForCausalLM")).__name__ == "AcmeA"
    assert registry.resolve(config_for("AcmeBForCausalLM")).__name__ == "AcmeB"
    with pytest.raises(UnknownArchitectureError):  # nothing half-registered stays
        registry.resolve(config_for("AcmeHalfForCausalLM"))


@pytest.fixture
def scratch_registry(monkeypatch):
    """A process registry holding only a GPT-2 adapter (labelled bridge-gpt2's), for plugins a test adds."""
    registry = PluginRegistry()
    registry.register_plugin(Plugin(GPT2Adapter), PluginInfo("bridge-gpt2", "0", "gpt2 = gpt2_family.plugin", ""))
    monkeypatch.setattr(bridge.plugins, "_registry", registry)
    return registry


def untouched(hf):
    return hf.config._attn_implementation == "sdpa" and not any(
        "forward" in m.__dict__ or m._forward_hooks or m._forward_pre_hooks for m in hf.modules()
    )


@pytest.mark.parametrize("hook", ["configure", "bridge_ready"])
@pytest.mark.parametrize("error", [RuntimeError("plugin bug"), SystemExit(4)], ids=["RuntimeError", "SystemExit"])
def test_failing_configure_or_bridge_ready_stops_the_load_naming_plugin_and_hook(scratch_registry, hook, error):
    class Failing:
        @bridge.hookimpl
        def configure(self, config):
            if hook == "configure":
                raise error

        @bridge.hookimpl
        def bridge_ready(self, bridge):
            bridge.add_hook("blocks.0.hook_resid_pre", lambda t, hook: None, is_permanent=True)
            if hook == "bridge_ready":
                raise error

    scratch_registry.register_plugin(Failing(), PluginInfo("acme-tweaks", "1.2", "tweaks = acme_tweaks", ""))
    hf = build_tiny_model(GPT2Examples.example_config())
    with pytest.raises(PluginHookError) as raised:
        bridge.wrap(hf)
    err = raised.value
    assert isinstance(err, bridge.BridgeError)
    assert (err.distribution, err.hook, err.__cause__) == ("acme-tweaks", hook, error)
    assert str(err).startswith(f"plugin acme-tweaks (tweaks = acme_tweaks) failed in its `{hook}` hook: ")
    assert f"{type(error).__name__}: {error}" in str(err)
    assert untouched(hf)
    scratch_registry.pm.unregister(name="acme-tweaks:tweaks")
    bridge.wrap(hf).detach()  # nothing holds on to the model: it can be bridged again


def test_match_adapter_junk_or_failure_is_ignored_with_a_warning_naming_the_plugin(scratch_registry):
    class Good:
        @bridge.hookimpl
        def match_adapter(self, hf_config):
            return GPT2Adapter if hf_config.model_type == "renamed" else None

    class Junk:
        @bridge.hookimpl
        def match_adapter(self, hf_config):
            return "GPT2Adapter"

    class Raising:
        @bridge.hookimpl
        def match_adapter(self, hf_config):
            raise KeyError("model_type")

    scratch_registry.register_plugin(Good(), PluginInfo("acme-good", "1", "good = acme_good", ""))
    scratch_registry.register_plugin(Junk(), PluginInfo("acme-junk", "1", "junk = acme_junk", ""))
    scratch_registry.register_plugin(Raising(), PluginInfo("acme-raises", "1", "r = acme_raises", ""))
    config = GPT2Examples.example_config()
    config.architectures, config.model_type = ["Renamed"], "renamed"
    with pytest.warns(PluginHookWarning) as record:
        assert scratch_registry.resolve(config) is GPT2Adapter
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "acme-raises (r = acme_raises): its match_adapter hook raised KeyError: 'model_type'" in messages[0]
    assert "acme-junk (junk = acme_junk): its match_adapter hook returned 'GPT2Adapter' (str)" in messages[1]
    config.model_type = "unclaimed"
    with (
        pytest.warns(PluginHookWarning),
        pytest.raises(UnknownArchitectureError, match="match_adapter failed in acme-raises, acme-junk"),
    ):
        scratch_registry.resolve(config)
