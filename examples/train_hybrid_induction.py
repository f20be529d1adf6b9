"""Train a tiny attention/Mamba-2 hybrid (a 2-layer Nemotron-H) that does induction on repeated random tokens.

Layer 0 is a Mamba-2 layer, layer 1 an attention layer without positional encoding; no MLP. The data is
``train_induction.py``'s: random walks over per-sequence random successor maps, full of repeated random
segments. After training, the script measures the loss on repeated versus fresh tokens, the attention layer's
induction and previous-token scores per head, and the loss with each layer's token mixer or one head
zero-ablated, then saves model, tokenizer, metrics and a model card to ``--out``.

Run from the repository root::

    python examples/train_hybrid_induction.py
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import training
from tokenizers import Tokenizer, models, pre_tokenizers
from training import Metrics
from transformers import NemotronHConfig, NemotronHForCausalLM, PreTrainedTokenizerFast

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN = "<bos>", "<eos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN)
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2
NUM_WORDS = 500
FIRST_WORD_ID = len(SPECIAL_TOKENS)
VOCAB_SIZE = FIRST_WORD_ID + NUM_WORDS
PATTERN = "M*"  # Nemotron-H's layer pattern: Mamba-2, then attention


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters for the training run and its synthetic data."""

    steps: int = 800
    batch_size: int = 16
    seq_len: int = 96
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    min_alphabet: int = 4
    max_alphabet: int = 32
    jump_prob: float = 0.25


@dataclass(frozen=True)
class EvalConfig:
    """Settings for the post-training induction measurements."""

    segment_len: int = 40
    batch_size: int = 32
    seed: int = 12345


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/models/hybrid-induction"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: two contend on a busy machine)")
    return parser.parse_args()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``t0`` .. ``t499``, with distinct BOS, EOS, padding and unknown tokens."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"t{i}": FIRST_WORD_ID + i for i in range(NUM_WORDS)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=256,
    )


def build_model() -> NemotronHForCausalLM:
    """A freshly initialised 2-layer Nemotron-H: Mamba-2 (4 heads of 32, state 16), then attention (4 heads)."""
    config = NemotronHConfig(
        hybrid_override_pattern=PATTERN,
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        mamba_num_heads=8,
        mamba_head_dim=32,
        n_groups=1,
        ssm_state_size=16,
        conv_kernel=4,
        chunk_size=32,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        architectures=["NemotronHForCausalLM"],
    )
    return NemotronHForCausalLM._from_config(config, attn_implementation="sdpa")


def make_sequence(cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """BOS + a random walk on a per-sequence random successor map (``train_induction.py``'s recipe): each next
    token is the successor of the current one or, with probability ``cfg.jump_prob``, a random alphabet word."""
    length = cfg.seq_len - 1
    size = int(torch.randint(cfg.min_alphabet, cfg.max_alphabet + 1, (), generator=generator))
    alphabet = torch.randperm(NUM_WORDS, generator=generator)[:size] + FIRST_WORD_ID
    successor = torch.randint(0, size, (size,), generator=generator).tolist()
    jumps = (torch.rand(length, generator=generator) < cfg.jump_prob).tolist()
    random_states = torch.randint(0, size, (length,), generator=generator).tolist()
    states = [random_states[0]]
    for jump, random_state in zip(jumps[1:], random_states[1:], strict=True):
        states.append(random_state if jump else successor[states[-1]])
    return torch.cat([torch.tensor([BOS_ID]), alphabet[torch.tensor(states)]])


def batch_loss(model: NemotronHForCausalLM, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    batch = torch.stack([make_sequence(cfg, generator) for _ in range(cfg.batch_size)])
    return model(input_ids=batch, labels=batch, use_cache=False).loss


def make_repeated_batch(eval_cfg: EvalConfig) -> torch.Tensor:
    """BOS + random segment of length L + the same segment again, ``[B, 2L+1]``."""
    generator = torch.Generator().manual_seed(eval_cfg.seed)
    shape = (eval_cfg.batch_size, eval_cfg.segment_len)
    segments = torch.randint(FIRST_WORD_ID, VOCAB_SIZE, shape, generator=generator)
    return torch.cat([torch.full((eval_cfg.batch_size, 1), BOS_ID), segments, segments], dim=1)


def half_losses(logits: torch.Tensor, tokens: torch.Tensor, length: int) -> tuple[float, float]:
    """Mean loss on the first copy (targets 2..L) and on the repeated copy (targets L+2..2L)."""
    token_losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return token_losses[:, 1:length].mean().item(), token_losses[:, length + 1 : 2 * length].mean().item()


def ablated_loss(model: NemotronHForCausalLM, tokens: torch.Tensor, length: int, module, head: int | None = None):
    """Repeated-half loss with ``module``'s output zeroed (``head``: only that head's slice of its input)."""
    head_dim = model.config.head_dim

    def zero_output(_module, _args, output):
        if isinstance(output, tuple):  # attention: (output, weights)
            return (torch.zeros_like(output[0]), *output[1:])
        return torch.zeros_like(output)

    def zero_head(_module, args):
        hidden = args[0].clone()
        hidden[..., head * head_dim : (head + 1) * head_dim] = 0.0
        return (hidden, *args[1:])

    handle = (
        module.register_forward_pre_hook(zero_head) if head is not None else module.register_forward_hook(zero_output)
    )
    try:
        with torch.no_grad():
            logits = model(input_ids=tokens, use_cache=False).logits
    finally:
        handle.remove()
    return half_losses(logits, tokens, length)[1]


def evaluate(model: NemotronHForCausalLM, eval_cfg: EvalConfig) -> Metrics:
    """Half losses, the attention layer's per-head scores (eager attention) and zero-ablation effects."""
    model.set_attn_implementation("eager")
    model.eval()
    tokens = make_repeated_batch(eval_cfg)
    length = eval_cfg.segment_len
    with torch.no_grad():
        out = model(input_ids=tokens, output_attentions=True, use_cache=False)
    first, repeated = half_losses(out.logits, tokens, length)
    pattern = out.attentions[0]  # [b, h, q, k] of the one attention layer (block 1)
    queries = torch.arange(length + 1, 2 * length + 1)
    induction = pattern[:, :, queries, queries - length + 1].mean(dim=(0, 2))
    positions = torch.arange(1, pattern.shape[-1])
    previous = pattern[:, :, positions, positions - 1].mean(dim=(0, 2))
    top, low = int(induction.argmax()), int(induction.argmin())
    mamba, attention = model.model.layers[0].mixer, model.model.layers[1].mixer
    return {
        "layer_types": model.config.layer_types,
        "segment_len": length,
        "eval_batch_size": eval_cfg.batch_size,
        "loss_first_half": first,
        "loss_repeated_half": repeated,
        "induction_scores": induction.tolist(),
        "previous_token_scores": previous.tolist(),
        "top_induction_head": [1, top],
        "top_induction_score": induction[top].item(),
        "ablate_top_induction_loss": ablated_loss(model, tokens, length, attention.o_proj, top),
        "least_induction_head": [1, low],
        "ablate_least_induction_loss": ablated_loss(model, tokens, length, attention.o_proj, low),
        "ablate_mamba_layer_loss": ablated_loss(model, tokens, length, mamba),
        "ablate_attention_layer_loss": ablated_loss(model, tokens, length, attention),
    }


def check_acceptance(metrics: Metrics) -> list[str]:
    """The acceptance criteria the metrics fail (empty if all pass)."""
    base = metrics["loss_repeated_half"]
    checks = {
        "top induction score > 0.4": metrics["top_induction_score"] > 0.4,
        "repeated loss < first-half loss / 4": base < metrics["loss_first_half"] / 4,
        "ablating the top induction head raises the loss more than the least one": (
            metrics["ablate_top_induction_loss"] > metrics["ablate_least_induction_loss"]
        ),
        "ablating the attention layer raises the loss by > 2": metrics["ablate_attention_layer_loss"] > base + 2,
        "ablating the Mamba layer raises the loss by > 2": metrics["ablate_mamba_layer_loss"] > base + 2,
    }
    return [name for name, ok in checks.items() if not ok]


def print_report(metrics: Metrics) -> None:
    print(f"layer types         {metrics['layer_types']}")
    print(f"loss first half     {metrics['loss_first_half']:.4f}")
    print(f"loss repeated half  {metrics['loss_repeated_half']:.4f}")
    print("induction scores    " + " ".join(f"{s:.3f}" for s in metrics["induction_scores"]))
    print("previous-token      " + " ".join(f"{s:.3f}" for s in metrics["previous_token_scores"]))
    for key in ("top_induction", "least_induction", "mamba_layer", "attention_layer"):
        print(f"repeated-half loss, {key.replace('_', ' ')} ablated: {metrics[f'ablate_{key}_loss']:.4f}")


def model_card(metrics: Metrics, cfg: TrainConfig) -> str:
    layer, head = metrics["top_induction_head"]
    length = metrics["segment_len"]
    scores = " | ".join(f"{s:.3f}" for s in metrics["induction_scores"])
    previous = " | ".join(f"{s:.3f}" for s in metrics["previous_token_scores"])
    base = metrics["loss_repeated_half"]
    low = "{}.{}".format(*metrics["least_induction_head"])
    return f"""# hybrid-induction

A tiny attention/Mamba-2 hybrid (`NemotronHForCausalLM`, layer pattern `{PATTERN}`: block 0 a Mamba-2 layer with
8 heads of 32 and state size 16, block 1 an attention layer with 4 heads of 32 and no positional encoding; no
MLP; d_model 128, {metrics["parameters"]:,} parameters) trained from scratch on synthetic random-token sequences with
recurring segments. It does induction: on a random segment repeated once, the loss on the repeat is
{base:.2f} against {metrics["loss_first_half"]:.2f} on the first copy. The attention layer carries the
lookup (head {layer}.{head}, induction score {metrics["top_induction_score"]:.2f}); it has no positional
encoding, so the "previous token" it matches on can only come from the Mamba-2 layer below it.

The tokenizer is word-level over `t0` .. `t{NUM_WORDS - 1}` (ids {FIRST_WORD_ID}..{VOCAB_SIZE - 1}) with distinct
`{BOS_TOKEN}` (id {BOS_ID}), `{EOS_TOKEN}` (id {EOS_ID}), `{PAD_TOKEN}` (id {PAD_ID}) and `{UNK_TOKEN}` (id 3). It does
not add BOS itself; the model was trained with BOS at position 0, so prepend it.

```python
import bridge

model = bridge.load("examples/models/hybrid-induction")
model.cfg.layer_types  # ['mamba2', 'attention']
logits, cache = model.run_with_cache("t1 t2 t3 t4 t5 t1 t2 t3")  # the bridge prepends {BOS_TOKEN}
cache["blocks.1.attn.hook_pattern"]   # [1, 4, 9, 9]
cache["blocks.0.hook_mixer_out"]      # what the Mamba-2 layer writes, [1, 9, 128]
```

`bridge demo --model examples/models/hybrid-induction` finds the mechanism from hooks alone.

## Training

- Command: `python examples/train_hybrid_induction.py` (from the repository root)
- Seed: {metrics["seed"]}; deterministic (`torch.use_deterministic_algorithms(True)`)
- Steps: {cfg.steps}, batch {cfg.batch_size} x {cfg.seq_len} tokens, AdamW lr {cfg.lr} (warmup {cfg.warmup_steps},
  cosine to 10%), weight decay {cfg.weight_decay}, SDPA attention and HF's chunked Mamba-2 scan while training
- Training wall time: {metrics["train_seconds"]:.0f} s with {metrics["threads"]} CPU threads (shared machine)

Data: `examples/train_induction.py`'s recipe. Each sequence is BOS + {cfg.seq_len - 1} tokens of a random walk on a
per-sequence random successor map over an alphabet of {cfg.min_alphabet}..{cfg.max_alphabet} random words (random
jumps with probability {cfg.jump_prob}), so repeated random segments of varying offsets and lengths recur in every
sequence; the mapping is new in every sequence and can only be read off the context. The model never trains on the
evaluation distribution.

## Evaluation

Batch of {metrics["eval_batch_size"]} sequences: BOS + a random segment of L={length} words + the same segment
again; eager attention.

| metric | value |
|---|---|
| loss, first copy (targets 2..L; chance is ln 500 = 6.21) | {metrics["loss_first_half"]:.4f} |
| loss, repeated copy (targets L+2..2L) | {base:.4f} |
| repeated-copy loss, attention layer (block 1) output zeroed | {metrics["ablate_attention_layer_loss"]:.4f} |
| repeated-copy loss, Mamba-2 layer (block 0) output zeroed | {metrics["ablate_mamba_layer_loss"]:.4f} |
| repeated-copy loss, head {layer}.{head} (top induction) zeroed | {metrics["ablate_top_induction_loss"]:.4f} |
| repeated-copy loss, head {low} (least induction) zeroed | {metrics["ablate_least_induction_loss"]:.4f} |

Attention layer (block 1), per head: induction score (mean attention from query `i` of the second copy to key
`i - L + 1`) and previous-token score (mean attention from `i` to `i - 1`):

| score | h0 | h1 | h2 | h3 |
|---|---|---|---|---|
| induction | {scores} |
| previous token | {previous} |
"""


def main() -> None:
    args = parse_args()
    cfg = TrainConfig(steps=args.steps)
    schedule = training.Schedule(cfg.steps, cfg.lr, cfg.warmup_steps, cfg.weight_decay, floor=0.1)
    training.run(
        args,
        build_model,
        build_tokenizer(),
        schedule,
        lambda model, generator: batch_loss(model, cfg, generator),
        lambda model: evaluate(model, EvalConfig()),
        check_acceptance,
        print_report,
        lambda metrics: model_card(metrics, cfg),
    )


if __name__ == "__main__":
    main()
