"""Behaviour beyond the kit: losses against labels (masked LM, classification, sequence-to-sequence) equal HF's,
``decoder_input=``, generation with hooks on both stacks equal to HF's greedy output, T5's position bias."""

import pytest
import torch
import transformers

import bridge
from bridge.kernel.errors import BadInputError
from bridge.kernel.hooked_model import decoder_start_token_id

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32, tiny models: observed gaps are ~1e-7


def load(model_dirs, architecture, **overrides):
    directory = model_dirs(architecture, **overrides)
    model = bridge.load(directory)
    reference = getattr(transformers, architecture).from_pretrained(directory, attn_implementation="eager").eval()
    return model, reference


def tokens(batch, pos, seed=0):
    return torch.randint(1, 128, (batch, pos), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "RobertaForMaskedLM", "DistilBertForMaskedLM"])
def test_mlm_loss_counts_the_labelled_positions_as_hf(model_dirs, architecture):
    model, reference = load(model_dirs, architecture)
    ids = tokens(2, 9)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 7] = 11, 42, 7  # the masked positions' targets
    mask = torch.ones_like(ids)
    mask[1, -1] = 0
    got = model(ids, return_type="loss", labels=labels, attention_mask=mask)
    expected = reference(ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(got, expected, **TOL)
    per_token = model(ids, return_type="loss", labels=labels, attention_mask=mask, loss_per_token=True)
    assert per_token.shape == ids.shape and bool((per_token[labels == -100] == 0).all())
    assert torch.isclose(per_token.sum() / 3, expected, atol=1e-5)
    with pytest.raises(BadInputError, match="needs labels="):
        model(ids, return_type="loss")


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification", "RobertaForSequenceClassification"])
def test_classifier_logits_and_loss_equal_hf(model_dirs, architecture):
    model, reference = load(model_dirs, architecture)
    ids = tokens(3, 6)
    labels = torch.tensor([2, 0, 1])
    logits, loss = model(ids, return_type="both", labels=labels)
    expected = reference(ids, labels=labels)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, expected.logits, **TOL)
    torch.testing.assert_close(loss, expected.loss, **TOL)
    _, cache = model.run_with_cache(ids, names_filter="hook_pooled")
    assert cache["hook_pooled"].shape == (3, 32)


def test_mapping_input_with_token_types_equals_hf(model_dirs):
    model, reference = load(model_dirs, "BertForMaskedLM")
    ids = tokens(2, 7)
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * 2)
    got, cache = model.run_with_cache({"input_ids": ids, "token_type_ids": types}, names_filter="hook_token_type_embed")
    torch.testing.assert_close(got, reference(ids, token_type_ids=types).logits, **TOL)
    table = reference.bert.embeddings.token_type_embeddings.weight
    torch.testing.assert_close(cache["hook_token_type_embed"], table[types], **TOL)


def test_labels_on_a_causal_lm_are_refused(tmp_path):
    pytest.importorskip("bridge_gpt2")
    from bridge.testing import examples_of, save_tiny_model
    from bridge_gpt2 import GPT2Adapter

    model = bridge.load(save_tiny_model(examples_of(GPT2Adapter).example_config(), tmp_path))
    with pytest.raises(BadInputError, match="next token"):
        model(tokens(1, 4), return_type="loss", labels=tokens(1, 4))
    with pytest.raises(BadInputError, match="encoder-decoder"):
        model(tokens(1, 4), decoder_input=tokens(1, 2))


SEQ2SEQ = ["T5ForConditionalGeneration", "BartForConditionalGeneration", "T5GemmaForConditionalGeneration"]


@pytest.mark.parametrize("architecture", SEQ2SEQ)
def test_seq2seq_loss_and_decoder_inputs_equal_hf(model_dirs, architecture):
    model, reference = load(model_dirs, architecture)
    ids, target = tokens(2, 8), tokens(2, 4, seed=1)
    target[1, -1] = -100
    expected = reference(input_ids=ids, labels=target)  # HF shifts the labels right into the decoder
    torch.testing.assert_close(model(ids, return_type="loss", labels=target), expected.loss, **TOL)
    decoder = tokens(2, 4, seed=2)
    logits = model(ids, decoder_input=decoder)
    assert logits.shape == (2, 4, 128)
    torch.testing.assert_close(logits, reference(input_ids=ids, decoder_input_ids=decoder).logits, **TOL)
    start = torch.full((2, 1), decoder_start_token_id(reference.config))  # no decoder input: the start token
    torch.testing.assert_close(model(ids), reference(input_ids=ids, decoder_input_ids=start).logits, **TOL)


@pytest.mark.parametrize("architecture", SEQ2SEQ)
def test_cross_attention_hooks_have_decoder_queries_and_encoder_keys(model_dirs, architecture):
    model, reference = load(model_dirs, architecture)
    ids, decoder = tokens(2, 8), tokens(2, 5, seed=1)
    _, cache = model.run_with_cache(ids, decoder_input=decoder)
    cfg = model.decoder.cfg
    heads, kv_heads, d_head = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head
    assert cache["decoder.blocks.2.cross_attn.hook_pattern"].shape == (2, heads, 5, 8)
    assert cache["decoder.blocks.0.cross_attn.hook_k"].shape == (2, 8, kv_heads, d_head)
    assert cache["decoder.blocks.0.cross_attn.hook_q"].shape == (2, 5, heads, d_head)
    assert cache["decoder.blocks.1.hook_resid_mid_cross"].shape == (2, 5, cfg.d_model)
    assert cache["encoder.blocks.1.attn.hook_pattern"].shape == (2, 4, 8, 8)
    out = reference(input_ids=ids, decoder_input_ids=decoder, output_attentions=True)
    for layer in range(3):
        torch.testing.assert_close(
            cache[f"decoder.blocks.{layer}.cross_attn.hook_pattern"], out.cross_attentions[layer], **TOL
        )
    decoder_self = cache["decoder.blocks.0.attn.hook_pattern"]
    assert bool((decoder_self.triu(1) == 0).all())  # the decoder's self-attention is causal
    assert bool((cache["encoder.blocks.0.attn.hook_pattern"].triu(1) > 0).any())  # the encoder's is not


#: HF's generate of T5 and BART cannot run a decoder deeper than the encoder (its cache has the encoder's number of
#: layers); T5Gemma's sizes the decoder's cache by the decoder.
GENERATE_LAYERS = {
    "T5ForConditionalGeneration": {"num_decoder_layers": 2},
    "BartForConditionalGeneration": {"decoder_layers": 2},
    "T5GemmaForConditionalGeneration": {},
}


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("architecture", SEQ2SEQ)
def test_generate_with_hooks_on_both_stacks_equals_hf_greedy(model_dirs, architecture, path):
    model, reference = load(model_dirs, architecture, **GENERATE_LAYERS[architecture])
    ids = tokens(2, 8)
    expected = reference.generate(input_ids=ids, max_new_tokens=8, do_sample=False, num_beams=1)
    fired = set()

    def record(t, hook):
        fired.add(hook.name.split(".")[0])

    hooks = [(lambda n: n.endswith("hook_resid_post"), record)]
    if path == "hooked":
        hooks.append((lambda n: n.endswith("hook_pattern"), lambda t, hook: None))
    got = model.generate(ids, max_new_tokens=8, do_sample=False, stop_at_eos=False, verbose=False, fwd_hooks=hooks)
    assert torch.equal(got, expected)
    assert fired == {"encoder", "decoder"}


def test_zeroed_position_bias_equals_hf_with_the_bias_table_zeroed(model_dirs):
    model, reference = load(model_dirs, "T5ForConditionalGeneration")
    ids, decoder = tokens(2, 8), tokens(2, 5, seed=1)
    zero = [(lambda n: n.endswith("hook_position_bias"), lambda t, hook: torch.zeros_like(t))]
    got = model.run_with_hooks(ids, decoder_input=decoder, fwd_hooks=zero)
    with torch.no_grad():
        for stack in (reference.encoder, reference.decoder):
            stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight.zero_()
    torch.testing.assert_close(got, reference(input_ids=ids, decoder_input_ids=decoder).logits, **TOL)
    assert not torch.allclose(got, model(ids, decoder_input=decoder), atol=1e-3)


def test_cache_analysis_logit_lens_through_the_mlm_head_and_refusals(model_dirs):
    from bridge.analysis.residual import AnalysisError

    model, _ = load(model_dirs, "BertForMaskedLM")
    logits, cache = model.run_with_cache(tokens(2, 6))
    stack = cache.accumulated_resid()  # [layers + 1, b, p, d_model]: the embeddings, then each block's output
    assert stack.shape == (3, 2, 6, 32)
    torch.testing.assert_close(stack[-1], cache["blocks.1.hook_normalized_resid_post"])
    lens = model.hf_model.cls(stack)  # the MLM head (transform, decoder) on every layer's stream
    torch.testing.assert_close(lens[-1], logits, **TOL)
    with pytest.raises(AnalysisError, match="normalizes the residual stream itself"):
        cache.decompose_resid()
    t5, _ = load(model_dirs, "T5ForConditionalGeneration")
    _, t5_cache = t5.run_with_cache(tokens(2, 6))
    with pytest.raises(AnalysisError, match="stacks \\['encoder', 'decoder'\\]"):
        t5_cache.accumulated_resid()


@pytest.mark.parametrize("architecture", ["HubertModel", "Wav2Vec2Model"])
def test_speech_encoders_read_audio_tensors_arrays_and_dicts(model_dirs, architecture):
    model, reference = load(model_dirs, architecture)
    audio = torch.randn(2, 400, generator=torch.Generator().manual_seed(4))
    expected = reference(audio).last_hidden_state
    hidden, cache = model.run_with_cache(audio, return_type="hidden")
    torch.testing.assert_close(hidden, expected, **TOL)
    torch.testing.assert_close(model(audio.numpy(), return_type="hidden"), expected, **TOL)
    torch.testing.assert_close(model({"input_values": audio}, return_type="hidden"), expected, **TOL)
    torch.testing.assert_close(model(audio[0], return_type="hidden"), expected[:1], **TOL)  # one example
    assert cache["feature_extractor.hook_conv_0"].shape == (2, 16, 79)  # [b, channels, frames]
    assert cache["feature_extractor.hook_conv_1"].shape == (2, 16, 39)
    assert cache["hook_features"].shape == cache["hook_pos_embed"].shape == (2, 39, 32)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 4, 39, 39)
    with pytest.raises(BadInputError, match="reads audio"):
        model(torch.ones(1, 400, dtype=torch.long), return_type="hidden")


def features(batch, seed=0):
    """Random log-mel features of the tiny Whisper: ``[b, 8 mels, 24]`` (12 encoder frames)."""
    return torch.randn(batch, 8, 24, generator=torch.Generator().manual_seed(seed))


def test_whisper_logits_and_seq2seq_loss_equal_hf_with_every_hook_cached(model_dirs):
    model, reference = load(model_dirs, "WhisperForConditionalGeneration")
    audio, decoder = features(2), tokens(2, 5, seed=1)
    logits, cache = model.run_with_cache(audio, decoder_input=decoder)
    torch.testing.assert_close(logits, reference(input_features=audio, decoder_input_ids=decoder).logits, **TOL)
    assert len(cache) == len(model.hook_dict) - sum(point.opt_in for point in model.hook_dict.values())
    target = tokens(2, 4, seed=2)
    target[0, -1] = -100
    expected = reference(input_features=audio, labels=target).loss  # HF shifts the labels right into the decoder
    torch.testing.assert_close(model(audio, return_type="loss", labels=target), expected, **TOL)
    start = torch.full((2, 1), reference.config.decoder_start_token_id)  # no decoder input: the start token
    torch.testing.assert_close(model(audio), reference(input_features=audio, decoder_input_ids=start).logits, **TOL)
    with pytest.raises(BadInputError, match="reads audio"):
        model({"decoder_input_ids": decoder})


def test_whisper_reads_arrays_single_examples_and_a_feature_extractors_output(model_dirs):
    import numpy as np
    from transformers import WhisperFeatureExtractor

    model, reference = load(model_dirs, "WhisperForConditionalGeneration")
    audio, decoder = features(2, seed=3), tokens(2, 4, seed=4)
    expected = reference(input_features=audio, decoder_input_ids=decoder).logits
    torch.testing.assert_close(model(audio.numpy(), decoder_input=decoder), expected, **TOL)
    torch.testing.assert_close(model(audio[1], decoder_input=decoder[1:]), expected[1:], **TOL)  # one example
    both = {"input_features": audio, "decoder_input_ids": decoder}
    torch.testing.assert_close(model(both), expected, **TOL)
    # a feature extractor built here: 3 s at 16 kHz, hop 2000 → the tiny model's 24 feature frames
    extractor = WhisperFeatureExtractor(feature_size=8, sampling_rate=16000, hop_length=2000, chunk_length=3)
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal(n).astype(np.float32) for n in (30000, 47000)]
    extracted = extractor(samples, sampling_rate=16000, return_tensors="pt")
    assert extracted["input_features"].shape == (2, 8, 24)
    got = model(dict(extracted), decoder_input=decoder)
    torch.testing.assert_close(got, reference(**extracted, decoder_input_ids=decoder).logits, **TOL)


def test_whisper_front_end_hooks_are_the_convolutions_and_the_position_table(model_dirs):
    model, reference = load(model_dirs, "WhisperForConditionalGeneration")
    audio, decoder = features(2, seed=5), tokens(2, 5, seed=6)
    _, cache = model.run_with_cache(audio, decoder_input=decoder)
    encoder = reference.model.encoder
    conv_0 = encoder.conv1(audio)  # [b, d_model, 24], before its GELU
    torch.testing.assert_close(cache["encoder.hook_conv_0"], conv_0, **TOL)
    conv_1 = encoder.conv2(torch.nn.functional.gelu(conv_0))  # [b, d_model, 12]
    torch.testing.assert_close(cache["encoder.hook_conv_1"], conv_1, **TOL)
    table = encoder.embed_positions.weight  # [12, d_model]
    torch.testing.assert_close(cache["encoder.hook_pos_embed"], table.expand(2, -1, -1), **TOL)
    embedded = torch.nn.functional.gelu(conv_1).transpose(1, 2) + table  # block 0's input
    torch.testing.assert_close(cache["encoder.blocks.0.hook_resid_pre"], embedded, **TOL)
    positions = reference.model.decoder.embed_positions.weight[:5]
    torch.testing.assert_close(cache["decoder.hook_pos_embed"], positions.expand(2, -1, -1), **TOL)
    zero = [("encoder.hook_conv_1", lambda t, hook: torch.zeros_like(t))]
    got = model.run_with_hooks(audio, decoder_input=decoder, fwd_hooks=zero)
    with torch.no_grad():
        encoder.conv2.weight.zero_()
        encoder.conv2.bias.zero_()
    torch.testing.assert_close(got, reference(input_features=audio, decoder_input_ids=decoder).logits, **TOL)


@pytest.mark.parametrize("path", ["native", "hooked"])
def test_whisper_generate_with_hooks_on_both_stacks_equals_hf_greedy(model_dirs, path):
    # untied embeddings: the tied tiny model repeats the start token's neighbours, the untied one varies
    model, reference = load(model_dirs, "WhisperForConditionalGeneration", tie_word_embeddings=False)
    audio = features(3, seed=1)
    expected = reference.generate(input_features=audio, max_new_tokens=8, do_sample=False, num_beams=1)
    fired = set()

    def record(t, hook):
        fired.add(hook.name.split(".")[0])

    hooks = [(lambda n: n.endswith("hook_resid_post"), record)]
    if path == "hooked":
        hooks.append((lambda n: n.endswith("hook_pattern"), lambda t, hook: None))
    eos = reference.config.eos_token_id
    got = model.generate(audio, max_new_tokens=8, do_sample=False, eos_token_id=eos, verbose=False, fwd_hooks=hooks)
    assert torch.equal(got, expected)  # Whisper's generate returns the new tokens, without the start token
    assert len(set(got.flatten().tolist())) > 2 and not torch.equal(got[0], got[2])
    assert fired == {"encoder", "decoder"}


def test_t5gemma_stacks_keep_their_own_widths_scaled_embeddings_and_bidirectional_windows(model_dirs):
    model, reference = load(model_dirs, "T5GemmaForConditionalGeneration")
    ids, decoder = tokens(2, 8), tokens(2, 5, seed=1)
    logits, cache = model.run_with_cache(ids, decoder_input=decoder)
    out = reference(input_ids=ids, decoder_input_ids=decoder, output_attentions=True)
    torch.testing.assert_close(logits, out.logits, **TOL)
    assert (model.encoder.cfg.d_model, model.decoder.cfg.d_model) == (32, 24)
    assert cache["encoder.blocks.1.hook_resid_post"].shape == (2, 8, 32)
    assert cache["decoder.blocks.2.hook_resid_post"].shape == (2, 5, 24)
    for stack, width in (("encoder", 32), ("decoder", 24)):  # HF scales the embedding by √d_model after the table
        scaled = cache[f"{stack}.hook_embed"] * torch.tensor(width**0.5)
        torch.testing.assert_close(cache[f"{stack}.blocks.0.hook_resid_pre"], scaled, **TOL)
    # layer 0 slides, in both directions in the encoder: HF keeps keys within the window inclusive, |q - k| ≤ window
    # (2·window + 1 keys), where the decoder's causal window keeps window keys, 0 ≤ q - k < window
    window = reference.config.encoder.sliding_window
    pattern = cache["encoder.blocks.0.attn.hook_pattern"]  # [b, heads, q, k]
    distance = (torch.arange(8)[:, None] - torch.arange(8)[None, :]).abs()
    assert bool((pattern[..., distance > window] == 0).all()) and bool((pattern[..., distance <= window] > 0).all())
    torch.testing.assert_close(pattern, out.encoder_attentions[0], **TOL)
    assert bool((cache["encoder.blocks.1.attn.hook_pattern"] > 0).all())  # layer 1 is global
