"""Weight processing on a model accelerate offloaded (part of its layers on disk): refused before any weight
changes, with the reason and what to do, on Llama (RMSNorm) and GPT-2 (LayerNorm, tied embeddings).

Reference: the same model's own logits and parameters before the call (nothing may have moved)."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

import bridge
from bridge.analysis.processing import WeightProcessingError
from bridge.testing import examples_of
from bridge.testing.fixtures import save_tiny_model

accelerate = pytest.importorskip("accelerate")

from bridge_gpt2.adapters import GPT2Adapter  # noqa: E402
from bridge_llama.adapters import LlamaAdapter  # noqa: E402

FAMILIES = {"gpt2": GPT2Adapter, "llama": LlamaAdapter}
TOKENS = torch.tensor([[0, 5, 17, 33, 9, 41, 2, 60]])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
    return save_tiny_model(
        examples_of(FAMILIES[request.param]).example_config(), tmp_path_factory.mktemp(request.param)
    )


def disk_map(directory) -> dict[str, str]:
    """The second half of the decoder layers on disk, everything else on the CPU."""
    config = transformers.AutoConfig.from_pretrained(directory)
    hf = getattr(transformers, config.architectures[0]).from_pretrained(directory)
    layers = max((m for m in hf.modules() if isinstance(m, nn.ModuleList)), key=len)
    path = {id(m): n for n, m in hf.named_modules()}[id(layers)]
    far = {f"{path}.{i}" for i in range(len(layers) // 2, len(layers))}
    device_map = {}
    for name, _ in [*hf.named_parameters(remove_duplicate=False), *hf.named_buffers()]:
        owner = name.rsplit(".", 1)[0]
        layer = next((lay for lay in far if owner == lay or owner.startswith(lay + ".")), None)
        device_map[layer or owner] = "disk" if layer else "cpu"
    return device_map


def snapshot(model: bridge.Bridge) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.hf_model.named_parameters() if p.device.type != "meta"}


@pytest.mark.parametrize("step", ["process_weights", "fold_layer_norm", "center_unembed", "center_writing_weights"])
def test_processing_an_offloaded_model_is_refused_before_anything_changes(saved, tmp_path, step):
    model = bridge.load(saved, device_map=disk_map(saved), offload_folder=tmp_path / "offload")
    with torch.no_grad():
        before = model(TOKENS)
    params = snapshot(model)
    if step == "center_writing_weights" and model.cfg.normalization_type != "LN":
        pytest.skip("centring the residual stream is for LayerNorm models (refused for RMSNorm anyway)")
    with pytest.raises(WeightProcessingError, match=r"offloaded.*(disk|meta).*without offload"):
        getattr(model, step)()
    after = snapshot(model)
    assert after.keys() == params.keys() and all(torch.equal(after[n], params[n]) for n in params)
    assert "weight_processing" not in model.cfg.extra
    with torch.no_grad():
        assert torch.equal(model(TOKENS), before)


def test_load_with_processing_and_offload_is_refused(saved, tmp_path):
    with pytest.raises(WeightProcessingError, match="offloaded"):
        bridge.load(saved, device_map=disk_map(saved), offload_folder=tmp_path / "offload", fold_ln=True)
