"""With only bridge-core and bridge-mla loaded (``BRIDGE_LOAD_PLUGINS=bridge-mla``, fresh process): a
DeepSeek-V3 directory loads; a BLOOM one fails with an error naming the plugin to install."""

import textwrap

from transformers import BloomConfig

from bridge.testing import examples_of, run_isolated, save_tiny_model
from bridge_mla import DeepseekV3Adapter


def test_only_bridge_mla_loads_deepseek_and_names_bridge_alibi_for_bloom(tmp_path):
    deepseek = save_tiny_model(examples_of(DeepseekV3Adapter).example_config(), tmp_path / "deepseek")
    bloom = tmp_path / "bloom"
    bloom.mkdir()
    BloomConfig(architectures=["BloomForCausalLM"]).save_pretrained(bloom)
    script = textwrap.dedent(
        f"""
        import bridge
        print("PLUGINS", sorted(p.distribution for p in bridge.get_registry().plugins if p.status == "loaded"))
        model = bridge.load({str(deepseek)!r})
        _, cache = model.run_with_cache("The cat sat", names_filter=lambda n: n.endswith("hook_kv_latent"))
        print("LOADED", model.cfg.architecture, tuple(cache["blocks.1.attn.hook_kv_latent"].shape))
        try:
            bridge.load({str(bloom)!r})
        except bridge.UnknownArchitectureError as err:
            print("ERROR", err)
        """
    )
    result = run_isolated(script, "bridge-mla")
    assert result.returncode == 0, result.stderr
    assert "PLUGINS ['bridge-mla']" in result.stdout
    assert "LOADED DeepseekV3ForCausalLM (1, " in result.stdout
    error = next(line for line in result.stdout.splitlines() if line.startswith("ERROR"))
    assert "BloomForCausalLM" in error and "bridge-alibi" in error
