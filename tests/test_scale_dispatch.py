"""Models spread by accelerate (device_map with CPU + disk offload, ``cpu_offload``, ``disk_offload``), one per family.

References are the HF model itself, loaded plainly from the same directory: its logits, its hidden states, its
greedy generation, and torch forward hooks on its decoder layers for ablations and SAE splices. On this CPU-only
machine every layer runs on the CPU while offloaded weights live on "meta" (in RAM or on disk); the CUDA variant
spreads the layers over the GPUs and the CPU and is skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

import bridge
from bridge.testing import examples_of
from bridge.testing.fixtures import save_tiny_model

accelerate = pytest.importorskip("accelerate")

from bridge_alibi.adapters import BloomAdapter  # noqa: E402
from bridge_gpt2.adapters import GPT2Adapter  # noqa: E402
from bridge_llama.adapters import LlamaAdapter  # noqa: E402
from bridge_mamba.adapters import MambaAdapter  # noqa: E402
from bridge_mla.adapters import DeepseekV2Adapter  # noqa: E402

FAMILIES = {
    "gpt2": GPT2Adapter,
    "llama": LlamaAdapter,
    "mamba": MambaAdapter,
    "alibi": BloomAdapter,
    "mla": DeepseekV2Adapter,
}
TOKENS = torch.tensor([[0, 5, 17, 33, 9, 41, 2, 60], [0, 7, 7, 12, 90, 3, 55, 21]])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    return save_tiny_model(examples_of(FAMILIES[request.param]).example_config(), directory)


def hf_reference(directory) -> nn.Module:
    config = transformers.AutoConfig.from_pretrained(directory)
    return getattr(transformers, config.architectures[0]).from_pretrained(directory).eval()


def decoder_layers(hf_model: nn.Module) -> nn.ModuleList:
    """The HF model's list of decoder layers (the longest ModuleList)."""
    return max((m for m in hf_model.modules() if isinstance(m, nn.ModuleList)), key=len)


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def split_device_map(hf_model: nn.Module, far: str = "disk", near: str | int = "cpu") -> dict[str, str | int]:
    """The second half of the decoder layers on ``far``, every other module on ``near``."""
    layers = decoder_layers(hf_model)
    path = {id(m): n for n, m in hf_model.named_modules()}[id(layers)]
    far_layers = {f"{path}.{i}" for i in range(len(layers) // 2, len(layers))}
    device_map: dict[str, str | int] = {}
    for name, _ in [*hf_model.named_parameters(remove_duplicate=False), *hf_model.named_buffers()]:
        owner = name.rsplit(".", 1)[0]
        layer = next((lay for lay in far_layers if owner == lay or owner.startswith(lay + ".")), None)
        device_map[layer or owner] = far if layer else near
    return device_map


def load_offloaded(directory, tmp_path) -> bridge.Bridge:
    """The first half of the layers (and embeddings, head) on the CPU, the second half offloaded to disk."""
    device_map = split_device_map(hf_reference(directory))
    return bridge.load(directory, device_map=device_map, offload_folder=tmp_path / "offload")


def replace_layer_output(layer: nn.Module, fn) -> torch.utils.hooks.RemovableHandle:
    """A torch forward hook that replaces a decoder layer's hidden-state output by ``fn(hidden)``."""

    def hook(_module, _args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return layer.register_forward_hook(hook)


def layer_outputs(hf_model: nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each decoder layer's hidden-state output ``[b, p, d_model]``, caught by torch forward hooks."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _args, output):
        outputs.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    handles = [layer.register_forward_hook(keep) for layer in decoder_layers(hf_model)]
    try:
        with torch.no_grad():
            hf_model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


@pytest.fixture(scope="module")
def offloaded(saved, tmp_path_factory):
    return load_offloaded(saved, tmp_path_factory.mktemp("offload"))


def test_device_map_offloads_to_disk_and_matches_hf_logits(saved, offloaded):
    placement = set(offloaded.hf_model.hf_device_map.values())
    assert {"cpu", "disk"} <= placement, placement
    assert any(p.device.type == "meta" for p in offloaded.hf_model.parameters())  # truly offloaded
    with torch.no_grad():
        expected = hf_reference(saved)(TOKENS).logits
        logits = offloaded(TOKENS)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_device_map_auto_with_a_memory_budget_offloads_and_matches_hf_logits(saved, tmp_path):
    budget = {"cpu": param_bytes(hf_reference(saved)) // 2}
    model = bridge.load(saved, device_map="auto", max_memory=budget, offload_folder=tmp_path / "offload")
    assert "disk" in model.hf_model.hf_device_map.values()
    with torch.no_grad():
        torch.testing.assert_close(model(TOKENS), hf_reference(saved)(TOKENS).logits, atol=1e-5, rtol=1e-5)


def test_offloaded_cache_matches_hf_hidden_states(saved, offloaded):
    with torch.no_grad():
        hidden = layer_outputs(hf_reference(saved), TOKENS)
        _, cache = offloaded.run_with_cache(TOKENS, device="cpu")
    assert len(hidden) == offloaded.cfg.n_layers
    for layer, expected in enumerate(hidden):
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], expected, atol=1e-5, rtol=1e-5)
    assert all(t.device.type == "cpu" for t in cache.values())


def test_offloaded_ablation_acts_as_on_the_hf_model(saved, offloaded):
    reference = hf_reference(saved)
    seen = []

    def zero(x, hook):
        seen.append(x.device)
        return torch.zeros_like(x)

    with torch.no_grad():
        handle = replace_layer_output(decoder_layers(reference)[0], torch.zeros_like)
        expected = reference(TOKENS).logits
        handle.remove()
        logits = offloaded.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.hook_resid_post", zero)])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert seen == [torch.device("cpu")]


def test_offloaded_patch_from_another_run_acts_as_on_the_hf_model(saved, offloaded):
    reference = hf_reference(saved)
    other = TOKENS.flip(0)
    with torch.no_grad():
        source = layer_outputs(reference, other)[0]  # block 0's output on `other`
        handle = replace_layer_output(decoder_layers(reference)[0], lambda h: source[:, :, :] + 0 * h)
        expected = reference(TOKENS).logits
        handle.remove()
        _, cache = offloaded.run_with_cache(other, names_filter="blocks.0.hook_resid_post", device="cpu")
        patched = cache["blocks.0.hook_resid_post"]
        logits = offloaded.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: patched)])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_offloaded_stop_at_layer_matches_hf_hidden_state(saved, offloaded):
    with torch.no_grad():
        expected = layer_outputs(hf_reference(saved), TOKENS)[0]
        residual = offloaded(TOKENS, stop_at_layer=1)
    torch.testing.assert_close(residual, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the offloaded weights are still usable after a forward that stopped early
        torch.testing.assert_close(offloaded(TOKENS), hf_reference(saved)(TOKENS).logits, atol=1e-5, rtol=1e-5)


def test_offloaded_greedy_generate_matches_hf(saved, offloaded):
    prompt = TOKENS[:1, :4]
    reference = hf_reference(saved)
    with torch.no_grad():
        expected = reference.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=5,
            do_sample=False,
            min_new_tokens=5,
            pad_token_id=0,
        )
        out = offloaded.generate(prompt, max_new_tokens=5, do_sample=False, stop_at_eos=False, verbose=False)
    assert out.tolist() == expected.tolist()


class TinySAE(nn.Module):
    """encode: relu(W_enc (x - b_dec) + b_enc); decode: W_dec acts + b_dec."""

    def __init__(self, d_in: int, d_sae: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=generator) / d_in**0.5)
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_in, generator=generator) / d_sae**0.5)
        self.b_enc = nn.Parameter(torch.randn(d_sae, generator=generator) * 0.1)
        self.b_dec = nn.Parameter(torch.randn(d_in, generator=generator) * 0.1)
        self.cfg = type("Cfg", (), {"hook_name": "blocks.0.hook_resid_post"})()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return acts @ self.W_dec + self.b_dec


def test_offloaded_sae_splice_acts_as_on_the_hf_model(saved, offloaded):
    reference = hf_reference(saved)
    sae = TinySAE(offloaded.cfg.d_model)
    with torch.no_grad():
        handle = replace_layer_output(decoder_layers(reference)[0], lambda h: sae.decode(sae.encode(h)))
        expected = reference(TOKENS).logits
        handle.remove()
        logits = offloaded.run_with_saes(TOKENS, saes=[sae])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("how", ["cpu_offload", "disk_offload"])
def test_wrap_of_an_accelerate_offloaded_model(saved, tmp_path, how):
    reference = hf_reference(saved)
    hf_model = hf_reference(saved)
    if how == "cpu_offload":
        accelerate.cpu_offload(hf_model, execution_device="cpu")
    else:
        accelerate.disk_offload(hf_model, tmp_path / "weights", execution_device="cpu")
    assert all(p.device.type == "meta" for p in decoder_layers(hf_model).parameters())
    model = bridge.wrap(hf_model)
    with torch.no_grad():
        handle = replace_layer_output(decoder_layers(reference)[0], torch.zeros_like)
        expected_ablated = reference(TOKENS).logits
        handle.remove()
        torch.testing.assert_close(model(TOKENS), reference(TOKENS).logits, atol=1e-5, rtol=1e-5)
        ablated = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x * 0)])
    torch.testing.assert_close(ablated, expected_ablated, atol=1e-5, rtol=1e-5)


def test_wrap_adds_no_parameter_copies(saved, tmp_path):
    config = transformers.AutoConfig.from_pretrained(saved)
    dispatched = getattr(transformers, config.architectures[0]).from_pretrained(
        saved, device_map=split_device_map(hf_reference(saved)), offload_folder=tmp_path / "offload"
    )
    for hf_model in (hf_reference(saved), dispatched):
        before = {n: (p.data_ptr(), p.device, p.numel() * p.element_size()) for n, p in hf_model.named_parameters()}
        model = bridge.wrap(hf_model)
        after = {n: (p.data_ptr(), p.device, p.numel() * p.element_size()) for n, p in hf_model.named_parameters()}
        assert after == before
        bridged = {p.data_ptr() for p in model.parameters() if p.device.type != "meta"}
        assert bridged <= {ptr for ptr, device, _ in before.values() if device.type != "meta"}
        assert param_bytes(model) == param_bytes(hf_model)


def test_device_map_arguments_are_checked(saved):
    with pytest.raises(bridge.kernel.errors.BridgeError, match="device_map"):
        bridge.load(saved, max_memory={"cpu": 10_000})
    with pytest.raises(bridge.kernel.errors.BridgeError, match="not both"):
        bridge.load(saved, device="cpu", device_map="auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_map_over_gpu_and_cpu(saved):
    reference = hf_reference(saved)
    model = bridge.load(saved, device_map=split_device_map(reference, far="cpu", near=0))
    last = model.cfg.n_layers - 1
    seen: dict[str, torch.device] = {}

    def where(x, hook):
        seen[hook.name] = x.device

    with torch.no_grad():
        logits = model.run_with_hooks(TOKENS, fwd_hooks=[(lambda n: n.endswith("hook_resid_post"), where)])
        torch.testing.assert_close(logits.cpu(), reference(TOKENS).logits, atol=1e-4, rtol=1e-4)
        assert seen["blocks.0.hook_resid_post"].type == "cuda" and seen[f"blocks.{last}.hook_resid_post"].type == "cpu"
        _, cache = model.run_with_cache(TOKENS, device="cpu")
        assert all(t.device.type == "cpu" for t in cache.values())
        ablated = model.run_with_hooks(  # a patch made on the CPU is moved to the GPU block 0 runs on
            TOKENS, fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x.cpu() * 0)]
        )
        handle = replace_layer_output(decoder_layers(reference)[0], torch.zeros_like)
        torch.testing.assert_close(ablated.cpu(), reference(TOKENS).logits, atol=1e-4, rtol=1e-4)
        handle.remove()
