import pytest
import torch
from transformers import CLIPImageProcessor, Siglip2ImageProcessor, SiglipImageProcessor

from bridge.testing import make_pair, save_tiny_model
from bridge_vision import ADAPTERS

# Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only slow backward passes.
torch.set_num_threads(1)


def image_processor(config):
    """An image processor for the tiny config, built here (nothing is downloaded)."""
    vision = getattr(config, "vision_config", None) or config
    if config.model_type.startswith("siglip2"):
        return Siglip2ImageProcessor(patch_size=vision.patch_size, max_num_patches=vision.num_patches)
    size = vision.image_size
    if config.model_type.startswith("clip"):
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return SiglipImageProcessor(size={"height": size, "width": size})


def save_vision_model(adapter, architecture, directory):
    """The adapter's seeded tiny model, with the tiny tokenizer and an image processor saved beside it."""
    config = adapter.example_config(architecture)
    save_tiny_model(config, directory)
    image_processor(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    cases = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures]
    return {arch: save_vision_model(adapter, arch, tmp_path_factory.mktemp(arch)) for adapter, arch in cases}


@pytest.fixture
def pair_for(model_dirs):
    def build(adapter, architecture, path="native"):
        return make_pair(adapter, architecture, path, directory=model_dirs[architecture])

    return build
