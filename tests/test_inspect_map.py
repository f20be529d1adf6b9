"""``bridge inspect MODEL --map``: the component tree an adapter builds."""

import json

import bridge
from bridge.app.cli import main
from bridge.kernel.components.base import Component
from bridge.testing import save_tiny_model
from bridge_gpt2.examples import GPT2Examples
from bridge_mla.examples import DeepseekV3Examples


def test_inspect_map_shows_each_component_with_the_hf_module_it_wraps(tmp_path, capsys):
    """``bridge inspect MODEL --map``: every component, its kind, the HF module it wraps (checked against the HF
    model's own module tree) and its spec's options; identical blocks fold into one ``blocks.0..1`` group while a
    model whose layers differ (DeepSeek-V3: dense layer 0, MoE layer 1) shows each."""
    gpt2 = save_tiny_model(GPT2Examples.example_config(), tmp_path / "gpt2")
    assert main(["inspect", str(gpt2), "--map", "--json"]) == 0
    nodes = json.loads(capsys.readouterr().out)["map"]
    model = bridge.load(gpt2)
    components = {n: m for n, m in model.named_modules() if isinstance(m, Component) and not n.startswith("hf_model")}
    assert {node["name"] for node in nodes} == {*components, "unembed"}
    for node in nodes:
        if node["name"] == "unembed":
            assert model.hf_model.get_submodule(node["hf_path"]) is model.hf_model.lm_head
            continue
        assert model.hf_model.get_submodule(node["hf_path"]) is components[node["name"]].hf_module
        assert node["kind"] == type(components[node["name"]]).__name__
    assert next(n for n in nodes if n["name"] == "blocks.1.mlp")["options"] == "pre='c_fc', out='c_proj'"
    assert main(["inspect", str(gpt2), "--map"]) == 0
    text = capsys.readouterr().out
    assert "blocks.0..1.attn" in text and "transformer.h.{i}.attn" in text and "FusedQKV(path='c_attn'" in text

    deepseek = save_tiny_model(DeepseekV3Examples.example_config(), tmp_path / "deepseek")
    assert main(["inspect", str(deepseek), "--map"]) == 0
    text = capsys.readouterr().out
    assert "blocks.0.mlp " in text and "blocks.1.mlp " in text and "blocks.0..1" not in text
    assert "MoE" in text.split("blocks.1.mlp ", 1)[1].splitlines()[0]
