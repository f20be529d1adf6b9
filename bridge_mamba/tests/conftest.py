import einops
import pytest
import torch

from bridge.testing import make_pair
from bridge_mamba import ADAPTERS


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """One saved tiny model per architecture, shared by the session (loading stays per test)."""
    return {arch: tmp_path_factory.mktemp(arch) for adapter in ADAPTERS for arch in adapter.architectures}


@pytest.fixture
def pair_for(model_dirs):
    """``pair_for(adapter)``: a fresh bridge on the session's tiny model and an independent HF reference."""

    def build(adapter, arch=None, path="native"):
        arch = arch or adapter.architectures[0]
        return make_pair(adapter, arch, path, directory=model_dirs[arch])

    return build


@pytest.fixture
def reconstruct_ssm_out():
    """``reconstruct(model, cache, layer, M)``: ``y_t = Σ_s M[t, s] x_s + D x_t`` from the cached SSM input x."""

    def reconstruct(model, cache, layer: int, M: torch.Tensor) -> torch.Tensor:
        x = cache[f"blocks.{layer}.mixer.hook_ssm_in"]
        D = model.blocks[layer].mixer.hf.D
        if x.ndim == 3:  # Mamba-1, per channel: x [b, p, d], M [b, d, t, s]
            return einops.einsum(M, x, "b c t s, b s c -> b t c") + x * D
        return einops.einsum(M, x, "b h t s, b s h e -> b t h e") + x * D[:, None]  # x [b, p, h, e]

    return reconstruct
