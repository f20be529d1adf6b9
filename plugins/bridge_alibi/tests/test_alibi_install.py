"""With only bridge-core and bridge-alibi loaded (``BRIDGE_LOAD_PLUGINS=bridge-alibi``, fresh process):
a BLOOM directory loads; a DeepSeek-V3 one fails with an error naming the plugin to install."""

import textwrap

from transformers import DeepseekV3Config

from bridge.testing import examples_of, run_isolated, save_tiny_model
from bridge_alibi import BloomAdapter


def test_only_bridge_alibi_loads_bloom_and_names_bridge_mla_for_deepseek(tmp_path):
    bloom = save_tiny_model(examples_of(BloomAdapter).example_config(), tmp_path / "bloom")
    deepseek = tmp_path / "deepseek"
    deepseek.mkdir()
    DeepseekV3Config(architectures=["DeepseekV3ForCausalLM"]).save_pretrained(deepseek)
    script = textwrap.dedent(
        f"""
        import bridge
        print("PLUGINS", sorted(p.distribution for p in bridge.get_registry().plugins if p.status == "loaded"))
        model = bridge.load({str(bloom)!r})
        logits, cache = model.run_with_cache("The cat sat", names_filter=lambda n: n.endswith("hook_alibi"))
        print("LOADED", model.cfg.architecture, tuple(cache["blocks.1.attn.hook_alibi"].shape))
        try:
            bridge.load({str(deepseek)!r})
        except bridge.UnknownArchitectureError as err:
            print("ERROR", err)
        """
    )
    result = run_isolated(script, "bridge-alibi")
    assert result.returncode == 0, result.stderr
    assert "PLUGINS ['bridge-alibi']" in result.stdout
    assert "LOADED BloomForCausalLM (1, 6, 1," in result.stdout
    error = next(line for line in result.stdout.splitlines() if line.startswith("ERROR"))
    assert "DeepseekV3ForCausalLM" in error and "bridge-mla" in error
