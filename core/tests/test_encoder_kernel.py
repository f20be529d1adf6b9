"""Kernel pieces encoders and encoder-decoders need, each against an independent computation: losses against
labels, cross-attention (never causal at the seam), T5-style position bias in the seam's eager attention, an
embedding shared by two stacks firing each stack's hook only for its own calls, mapping inputs."""

import pytest
import torch
from torch import nn

from bridge.components import CrossAttention, SplitQKV, eager_attention
from bridge.kernel import BridgeConfig, HookPoint
from bridge.kernel.components.embedding import Embedding
from bridge.kernel.errors import BadInputError
from bridge.kernel.loss import labelled_loss


def test_labelled_loss_is_cross_entropy_over_the_labels_that_are_not_ignored():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator)
    labels = torch.randint(0, 11, (2, 5), generator=generator)
    labels[0, 1] = labels[1, 4] = -100
    expected = nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(labelled_loss(logits, labels), expected, atol=1e-6, rtol=1e-6)
    per_token = labelled_loss(logits, labels, per_token=True)
    assert per_token.shape == (2, 5) and per_token[0, 1] == 0 and per_token[1, 4] == 0
    torch.testing.assert_close(per_token.sum() / 8, expected, atol=1e-6, rtol=1e-6)
    classes = torch.tensor([3, -100])  # a classifier: one label per sequence
    torch.testing.assert_close(
        labelled_loss(logits[:, 0], classes), nn.functional.cross_entropy(logits[:1, 0], classes[:1])
    )
    with pytest.raises(BadInputError, match="one label per position"):
        labelled_loss(logits, labels[:, :3])
    with pytest.raises(BadInputError, match="nothing to compute"):
        labelled_loss(logits, torch.full((2, 5), -100))
    with pytest.raises(BadInputError, match="integer tensor"):
        labelled_loss(logits, labels.float())


def test_eager_attention_adds_a_position_bias_before_the_mask():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 4, 5, generator=generator) for _ in range(3))  # [b, h, p, d]
    bias = torch.randn(1, 3, 4, 4, generator=generator)
    module = nn.Module()
    module.is_causal = False
    out, pattern = eager_attention(module, q, k, v, None, scaling=1.0, position_bias=bias)
    expected = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
    torch.testing.assert_close(pattern, expected)
    torch.testing.assert_close(out, (expected @ v).transpose(1, 2))


class _ToyAttention(nn.Module):
    """An HF-like attention module that claims to be causal (as a decoder layer's modules may)."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(8, 8) for _ in range(4))
        self.is_causal = True


def test_cross_attention_is_never_causal_at_the_seam():
    cfg = BridgeConfig(n_layers=1, d_model=8, n_heads=2, d_vocab=10)
    hf = _ToyAttention()
    attention = CrossAttention(hf, cfg, qkv=SplitQKV(), out="o_proj")
    assert attention.reads_other_stack
    seen = []
    attention.hook_pattern.add_hook(lambda t, hook: seen.append(t))
    generator = torch.Generator().manual_seed(2)
    query = torch.randn(1, 2, 3, 4, generator=generator)  # 3 decoder positions
    key, value = torch.randn(1, 2, 3, 4, generator=generator), torch.randn(1, 2, 3, 4, generator=generator)
    attention.run_seam(eager_attention, hf, query, key, value, None, scaling=0.5)
    expected = torch.softmax(query @ key.transpose(-1, -2) * 0.5, dim=-1)  # every encoder position read
    torch.testing.assert_close(seen[0], expected)
    above = torch.ones(3, 3, dtype=torch.bool).triu(1)  # keys after each query: read, not masked
    assert bool((seen[0][..., above] > 0).all())


def test_an_embedding_shared_by_two_stacks_fires_each_stack_hook_only_inside_it():
    table = nn.Embedding(10, 4)

    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = table

        def forward(self, ids):
            return self.embed(ids)

    encoder, decoder = Stack(), Stack()
    cfg = BridgeConfig(n_layers=1, d_model=4, n_heads=1, d_vocab=10)
    fired = {"encoder": [], "decoder": []}
    for name, stack in (("encoder", encoder), ("decoder", decoder)):
        hook = HookPoint()
        Embedding(table, cfg, hook=hook, scope=stack, only_in_scope=True)
        hook.add_hook(lambda t, hook, name=name: fired[name].append(tuple(t.shape)))
    encoder(torch.zeros(1, 3, dtype=torch.long))
    decoder(torch.zeros(1, 2, dtype=torch.long))
    assert fired == {"encoder": [(1, 3, 4)], "decoder": [(1, 2, 4)]}


def test_a_tokenizer_output_is_an_input_of_a_language_model(tmp_path):
    from public_api_adapters import GPT2Adapter

    import bridge
    from bridge.testing import examples_of, save_tiny_model

    model = bridge.load(save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path))
    encoded = model.tokenizer(["The cat sat", "A dog"], return_tensors="pt", padding=True)
    got = model(dict(encoded), prepend_bos=False)
    expected = model(encoded["input_ids"], attention_mask=encoded["attention_mask"], prepend_bos=False)
    torch.testing.assert_close(got, expected)
    with pytest.raises(BadInputError, match="do not pass attention_mask"):
        model(dict(encoded), attention_mask=encoded["attention_mask"])


def test_a_speech_to_text_models_input_is_its_audio_features_or_a_mapping_holding_them():
    from bridge import Adapter
    from bridge.kernel.model_inputs import ModelInputs

    class SpeechToText(nn.Module):
        def forward(self, input_features=None, decoder_input_ids=None, labels=None, **kwargs):
            raise AssertionError("not called")

    class SpeechToTextAdapter(Adapter):
        modalities = ("audio", "text")
        audio_input = "input_features"

    inputs = ModelInputs(SpeechToText(), SpeechToTextAdapter(None))
    assert inputs.language_with_audio and not inputs.reads_mappings_as_language
    features = torch.randn(2, 8, 24)  # [b, mels, frames]
    assert inputs.audio_language_inputs(features)["input_features"] is features
    assert inputs.audio_language_inputs(features[0])["input_features"].shape == (1, 8, 24)  # one example
    torch.testing.assert_close(inputs.audio_language_inputs(features.numpy())["input_features"], features)
    mapping = {"input_features": features, "decoder_input_ids": torch.ones(2, 3, dtype=torch.long)}
    assert inputs.audio_language_inputs(mapping) == mapping
    with pytest.raises(BadInputError, match="needs input_features"):
        inputs.audio_language_inputs({"decoder_input_ids": mapping["decoder_input_ids"]})
    with pytest.raises(BadInputError, match="takes no input named \\['pixel_values'\\]"):
        inputs.audio_language_inputs({**mapping, "pixel_values": features})
    with pytest.raises(BadInputError, match="reads audio"):
        inputs.audio_language_inputs(torch.ones(2, 8, 24, dtype=torch.long))
    with pytest.raises(BadInputError, match="reads audio"):
        inputs.audio_language_inputs(None)


def test_the_decoder_starts_from_its_start_token_else_from_bos_as_hf_generate_does():
    from types import SimpleNamespace

    from bridge.kernel.hooked_model import decoder_start_token_id

    assert decoder_start_token_id(SimpleNamespace(decoder_start_token_id=0, bos_token_id=2)) == 0  # 0 is a token
    assert decoder_start_token_id(SimpleNamespace(decoder_start_token_id=None, bos_token_id=2)) == 2  # T5Gemma
    assert decoder_start_token_id(SimpleNamespace()) is None
