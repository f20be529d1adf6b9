"""GPT-Neo, OPT and XGLM: what the conformance kit does not see. GPT-Neo's unscaled, windowed scores; OPT's
positions read at ``position + 2`` and its ``project_in``/``project_out`` (OPT-350m); XGLM's ``√d_model``
embedding scale and sinusoidal positions. Expected values come from the HF reference's own modules and
parameters, or from formulas written here (the real-checkpoint variants run the whole kit through
``conformance_configs``, in ``test_gpt2_conformance.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from bridge.analysis.processing import WeightProcessingError
from bridge.kernel.known import plugin_for
from bridge.testing import examples_of, make_pair, save_tiny_model
from bridge_gpt2 import ADAPTERS, GPTNeoAdapter, OPTAdapter, XGLMAdapter

TOL = 1e-5
MIN = torch.finfo(torch.float32).min


@pytest.fixture(scope="module")
def pair_of(tmp_path_factory):
    """``pair_of(adapter, config_key)``: a pair on the adapter's example config (key ``None``) or on one of its
    ``conformance_configs()``, saved once per module."""
    dirs = {}

    def build(adapter, key=None, path="native"):
        if (adapter, key) not in dirs:
            config = examples_of(adapter).conformance_configs()[key] if key else examples_of(adapter).example_config()
            dirs[adapter, key] = save_tiny_model(config, tmp_path_factory.mktemp(key or adapter.__name__))
        return make_pair(adapter, path=path, directory=dirs[adapter, key])

    return build


def tokens(batch: int = 2, pos: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (batch, pos), generator=torch.Generator().manual_seed(seed))


def causal(pos: int, window: int | None = None) -> torch.Tensor:
    """``[q, k]`` bool: key ``j`` visible from query ``i`` (``j <= i``, and ``i - j < window`` if windowed)."""
    i, j = torch.arange(pos)[:, None], torch.arange(pos)[None, :]
    allowed = j <= i
    return allowed & (i - j < window) if window is not None else allowed


def test_every_new_architecture_is_registered_and_known():
    names = {arch for adapter in ADAPTERS for arch in adapter.architectures}
    for arch in ("GPTNeoForCausalLM", "GPTNeoModel", "OPTForCausalLM", "OPTModel", "XGLMForCausalLM", "XGLMModel"):
        assert arch in names
        assert plugin_for([arch], None) == "bridge-gpt2"
    for model_type in ("gpt_neo", "opt", "xglm"):
        assert plugin_for(None, model_type) == "bridge-gpt2"


# ----------------------------------------------------------------------------------------------- GPT-Neo


@pytest.mark.parametrize("path", ["native", "hooked"])
def test_gpt_neo_scores_are_unscaled_and_local_layers_see_a_window(pair_of, path):
    """``hook_attn_scores`` is ``q·k`` with no ``1/√d`` (HF's scale 1.0) where the key is visible, the dtype's
    minimum elsewhere; layer 0 is global (causal), layer 1 local (the last ``window_size`` keys)."""
    pair = pair_of(GPTNeoAdapter, path=path)
    window = pair.bridge.hf_model.config.window_size
    x = tokens()
    _, cache = pair.bridge.run_with_cache(x)
    for layer, visible in ((0, causal(10)), (1, causal(10, window))):
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]
        expected = torch.einsum("bqhd,bkhd->bhqk", q, k)
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]
        torch.testing.assert_close(scores[..., visible], expected[..., visible], atol=1e-4, rtol=TOL)
        assert (scores[..., ~visible] == MIN).all()
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert (pattern[..., ~visible] == 0).all()
        torch.testing.assert_close(pattern, torch.softmax(expected.masked_fill(~visible, MIN), -1), atol=TOL, rtol=0)
    assert pair.bridge.cfg.extra["attn_types"] == ["global", "local"]


def test_gpt_neo_local_window_patched_key_outside_it_changes_nothing(pair_of):
    """On the local layer a key more than ``window_size`` positions back is never read: patching it at
    ``hook_k`` leaves that layer's later queries' ``hook_z`` unchanged, inside the window it does not."""
    pair = pair_of(GPTNeoAdapter)
    x = tokens(pos=12)
    _, clean = pair.bridge.run_with_cache(x, names_filter="blocks.1.attn.hook_z")

    def bump(position):
        def hook(t, hook):
            t = t.clone()
            t[:, position] += 3.0
            return t

        return hook

    with pair.bridge.hooks(fwd_hooks=[("blocks.1.attn.hook_k", bump(2))]):
        _, patched = pair.bridge.run_with_cache(x, names_filter="blocks.1.attn.hook_z")
    z, z_patched = clean["blocks.1.attn.hook_z"], patched["blocks.1.attn.hook_z"]
    window = pair.bridge.hf_model.config.window_size
    torch.testing.assert_close(z_patched[:, 2 + window :], z[:, 2 + window :], atol=0, rtol=0)
    assert (z_patched[:, 2 : 2 + window] - z[:, 2 : 2 + window]).abs().amax() > 1e-3


# ---------------------------------------------------------------------------------------------------- OPT


@pytest.mark.parametrize("key", [None, "opt-350m-style"])
def test_opt_positions_are_read_two_rows_on_and_W_pos_starts_there(pair_of, key):
    """``hook_pos_embed`` at position ``p`` is row ``p + 2`` of HF's ``embed_positions`` (as HF reads it),
    which is ``W_pos[p]``; on a left-padded row the first real token is at position 0."""
    pair = pair_of(OPTAdapter, key)
    table = pair.reference.get_submodule("model.decoder.embed_positions").weight
    _, cache = pair.bridge.run_with_cache(tokens(pos=7), names_filter="hook_pos_embed")
    torch.testing.assert_close(cache["hook_pos_embed"][0], table[2:9], atol=0, rtol=0)
    torch.testing.assert_close(pair.bridge.W_pos[:7], table[2:9], atol=0, rtol=0)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    _, padded = pair.bridge.run_with_cache(tokens(pos=7), attention_mask=mask, names_filter="hook_pos_embed")
    torch.testing.assert_close(padded["hook_pos_embed"][0, 2:], table[2:7], atol=0, rtol=0)


def test_opt_350m_embeds_through_project_in_and_unembeds_through_project_out(pair_of):
    """OPT-350m (post-LN, ``word_embed_proj_dim`` ≠ ``hidden_size``): ``hook_embed`` is ``project_in`` of the
    token table ``[b, p, d_model]`` (what enters the residual stream), ``resid_pre = embed + pos_embed``;
    ``hidden`` is the last block's output, the input HF's ``project_out`` receives; logits equal a plain HF
    model's (the reference's own head-side ``project_out`` changes nothing)."""
    pair = pair_of(OPTAdapter, "opt-350m-style")
    cfg = pair.bridge.hf_model.config
    assert not cfg.do_layer_norm_before and cfg.word_embed_proj_dim < cfg.hidden_size
    assert pair.bridge.ln_final is None
    x = tokens()
    decoder = pair.reference.get_submodule("model.decoder")
    with torch.no_grad():
        embedded = decoder.project_in(decoder.embed_tokens(x))  # [b, p, d_model]
    _, cache = pair.bridge.run_with_cache(x)
    torch.testing.assert_close(cache["hook_embed"], embedded, atol=TOL, rtol=0)
    resid_pre = cache["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(resid_pre, cache["hook_embed"] + cache["hook_pos_embed"], atol=TOL, rtol=0)
    assert pair.bridge.W_E.shape == (128, cfg.word_embed_proj_dim)

    plain = type(pair.bridge.hf_model).from_pretrained(
        pair.bridge.hf_model.config._name_or_path, attn_implementation="eager"
    )
    project_out_input = []
    handle = plain.model.decoder.project_out.register_forward_pre_hook(lambda _m, a: project_out_input.append(a[0]))
    with torch.no_grad():
        plain_logits = plain.eval()(x).logits
    handle.remove()
    torch.testing.assert_close(pair.bridge(x), plain_logits, atol=TOL, rtol=0)
    torch.testing.assert_close(pair.reference(x).logits, plain_logits, atol=0, rtol=0)
    torch.testing.assert_close(pair.bridge(x, return_type="hidden"), project_out_input[0], atol=TOL, rtol=0)


def test_opt_without_final_norm_ends_at_the_last_block(pair_of):
    """A pre-LN checkpoint with ``_remove_final_layer_norm``: no ``ln_final``, ``hidden`` is the last block's
    ``hook_resid_post`` and HF's last hidden state."""
    pair = pair_of(OPTAdapter, "opt-no-final-norm")
    assert pair.bridge.ln_final is None and pair.reference.model.decoder.final_layer_norm is None
    x = tokens()
    _, cache = pair.bridge.run_with_cache(x)
    expected = pair.reference(x, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(pair.bridge(x, return_type="hidden"), expected, atol=TOL, rtol=0)


# --------------------------------------------------------------------------------------------------- XGLM


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """fairseq's sinusoid ``[p, dim]``: ``[sin(p·f_i) | cos(p·f_i)]``, ``f_i = 10000^(-i/(dim/2 - 1))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    angles = positions[:, None].float() * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@pytest.mark.parametrize("key", [None, "xglm-unscaled"])
def test_xglm_embed_is_scaled_and_positions_are_sinusoids_two_on(pair_of, key):
    """``hook_embed`` is ``√d_model · W_E[tokens]`` (``W_E`` is the raw table; without ``scale_embedding`` the
    factor is 1), ``hook_pos_embed`` the sinusoid of ``position + 2``, which ``W_pos`` holds at row ``p``."""
    pair = pair_of(XGLMAdapter, key)
    d_model = pair.bridge.cfg.d_model
    scale = math.sqrt(d_model) if pair.bridge.hf_model.config.scale_embedding else 1.0
    x = tokens()
    _, cache = pair.bridge.run_with_cache(x, names_filter=lambda n: n in ("hook_embed", "hook_pos_embed"))
    table = pair.reference.get_input_embeddings().weight
    torch.testing.assert_close(cache["hook_embed"], scale * table[x], atol=TOL, rtol=0)
    expected = sinusoid(torch.arange(10) + 2, d_model)
    torch.testing.assert_close(cache["hook_pos_embed"][0], expected, atol=TOL, rtol=0)
    torch.testing.assert_close(pair.bridge.W_pos[:10], expected, atol=TOL, rtol=0)
    assert pair.bridge.cfg.positional_embedding_type == "sinusoidal"


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("adapter", [XGLMAdapter, OPTAdapter], ids=lambda a: a.__name__)
def test_scores_are_q_dot_k_over_root_d(pair_of, adapter, path):
    """XGLM and OPT scale the query by ``d_head ** -0.5`` right after ``q_proj``: ``hook_q`` is before that
    scale (``q_proj``'s output), ``hook_attn_scores`` is ``q·k / √d_head`` on visible keys."""
    pair = pair_of(adapter, path=path)
    _, cache = pair.bridge.run_with_cache(tokens())
    visible = causal(10)
    for layer in range(2):
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]
        expected = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]
        torch.testing.assert_close(scores[..., visible], expected[..., visible], atol=1e-4, rtol=TOL)
        assert (scores[..., ~visible] <= MIN / 2).all()


def test_centring_refuses_xglm_positions_and_opt_350m_project_in(pair_of):
    """``center_writing_weights`` changes weights so what they write to the residual stream has mean 0; XGLM's
    sinusoid is not a parameter and OPT-350m's embedding is written by ``project_in``: refused, saying which."""
    for adapter, key, says in (
        (XGLMAdapter, None, "XGLMSinusoidalPositionalEmbedding, not an embedding matrix"),
        (OPTAdapter, "opt-350m-style", "embed output comes from Linear"),
    ):
        model = pair_of(adapter, key).bridge
        with pytest.raises(WeightProcessingError, match=says):
            model.center_writing_weights()
