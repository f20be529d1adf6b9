"""Train a tiny model of another architecture family on the task of ``examples/models/induction-2l``.

The same data (random walks over per-sequence random successor maps, see ``train_induction.py``), the same
tokenizer and the same evaluation (BOS + a random segment of 40 words + the same segment again), on a 2-layer
model of one family: ``llama`` (RoPE), ``bloom`` (ALiBi), ``deepseek_v2`` (multi-head latent attention, layer 1
a mixture of experts) or ``mamba2`` (a selective state-space model: no attention at all). Mamba-2 rather than
Mamba-1: HF's CPU path for Mamba-1 scans one position at a time in Python (a training step took over a minute
here), while Mamba-2's is chunked. Each model is under 8 MiB and trains deterministically on 2 CPU threads; the
script saves model, tokenizer, metrics and a model card to ``examples/models/induction-<family>``.

Run from the repository root::

    python examples/train_induction_family.py --family llama
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import training
from train_induction import (
    BOS_ID,
    NUM_WORDS,
    VOCAB_SIZE,
    EvalConfig,
    TrainConfig,
    build_tokenizer,
    format_scores,
    half_losses,
    head_scores,
    make_batch,
    make_repeated_batch,
)
from training import Metrics
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    PreTrainedModel,
)

#: Like GPT-2's (``induction-2l``), the unembedding is the embedding, transposed: copying a token is then easy to learn.
SPECIALS = dict(
    bos_token_id=BOS_ID, eos_token_id=BOS_ID, pad_token_id=BOS_ID, vocab_size=VOCAB_SIZE, tie_word_embeddings=True
)


@dataclass(frozen=True)
class Family:
    """One architecture: how to build it, what it is, where its heads write, and its training schedule."""

    name: str
    description: str
    build: Callable[[], PreTrainedModel]
    #: ``(layer) -> module`` whose first input is the concatenated per-head outputs (None: no heads).
    head_output: Callable[[PreTrainedModel, int], torch.nn.Module] | None
    #: ``(layer) -> module`` whose output is the token mixer's write to the residual stream.
    mixer: Callable[[PreTrainedModel, int], torch.nn.Module]
    train: TrainConfig
    attention: str = "sdpa"
    #: Acceptance: the repeated copy's loss at most this share of the first copy's (segments of 40 words).
    max_loss_ratio: float = 0.25
    #: Acceptance: zero-ablating the last layer's token mixer raises the repeated copy's loss by more than this.
    min_mixer_effect: float = 1.0
    #: For the model card: why the recipe is what it is, and what was tried and did not work.
    notes: str = ""


def _llama() -> PreTrainedModel:
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        rope_theta=10000.0,
        attention_bias=True,
        **SPECIALS,
    )
    return LlamaForCausalLM._from_config(config, attn_implementation="sdpa")


def _bloom() -> PreTrainedModel:
    config = BloomConfig(hidden_size=128, n_layer=2, n_head=4, hidden_dropout=0.0, attention_dropout=0.0, **SPECIALS)
    return BloomForCausalLM._from_config(config, attn_implementation="eager")


def _deepseek_v2() -> PreTrainedModel:
    config = DeepseekV2Config(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=384,
        moe_intermediate_size=128,
        q_lora_rank=128,
        kv_lora_rank=128,
        qk_nope_head_dim=32,
        qk_rope_head_dim=32,
        v_head_dim=32,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        topk_method="greedy",
        first_k_dense_replace=1,
        max_position_embeddings=256,
        attention_bias=True,
        **SPECIALS,
    )
    return DeepseekV2ForCausalLM._from_config(config, attn_implementation="sdpa")


def _mamba2() -> PreTrainedModel:
    config = Mamba2Config(
        hidden_size=128,
        num_hidden_layers=2,
        expand=2,
        num_heads=8,
        head_dim=32,
        n_groups=1,
        state_size=16,
        conv_kernel=4,
        chunk_size=16,
        **SPECIALS,
    )
    return Mamba2ForCausalLM._from_config(config)


LLAMA_NOTES = """\
Induction needs a previous-token head in layer 0. With RoPE, a head can attend by relative position alone only
through a part of its queries and keys that does not depend on the token, so this Llama has biases on its
attention projections (`attention_bias=True`, as GPT-2 has); the rest is the recipe of `induction-2l` (batch 48,
lr 6e-3), run for 3000 steps. The training loss leaves the in-context-unigram plateau (about 4) around step
1400-1850. Tried first, all stuck on that plateau (training loss 3.7-4.3, repeated-copy loss about 6):

- no attention biases: batch 48, lr 6e-3, 2500 steps; batch 16 with lr 1e-3 (800 steps) or 3e-3 (800 and 2500
  steps), untied embeddings, `rope_theta` 100 (2000 steps). Layer 0's attention stayed uniform (previous-token
  score 0.05, what uniform attention over these positions gives).
- with biases but batch 16: lr 3e-3 for 800 and 4000 steps, lr 1e-2 for 1500 and 4000 steps (also with
  `rope_theta` 100), 32-token sequences at batch 48 for 1500 steps. Layer 0 drifted only towards a broad recency
  window (position-only scores peaking 1-3 tokens back; previous-token scores up to 0.2)."""

DEEPSEEK_V2_NOTES = """\
The Llama recipe (see `induction-llama`: attention biases, lr 6e-3) at twice the batch: 96 sequences, 2000 steps.
In DeepSeek-V2 the bias sits on the down-projections (`q_a_proj`, `kv_a_proj_with_mqa`), so queries get one only
through the low-rank query path (`q_lora_rank` 128 here; with `q_lora_rank` None, `q_proj` has no bias). The
training loss leaves the in-context-unigram plateau (about 4) around step 1100-1400. Tried first, all at batch 48
and all stuck on that plateau:

- no biases, `q_lora_rank` None, `kv_lora_rank` 64, rope/nope head dims 16/16, lr 6e-3, 2500 steps: repeated-copy
  loss 6.19, top induction score 0.01;
- biases, `q_lora_rank` 64, rope/nope 16/16, lr 6e-3, 3000 steps: repeated-copy loss 6.31, top induction score 0.02
  (layer-0 previous-token scores up to 0.16);
- biases, rope/nope 32/16 (`rope_theta` 10000 or 1000): still on the plateau at step 2600 of 3000;
- biases, `q_lora_rank` and `kv_lora_rank` 128, rope/nope 32/32 (this model's shape), lr 6e-3 or 1e-2: still on
  the plateau at step 2000 of 3000."""

MAMBA2_NOTES = """\
4000 steps at batch 16, lr 3e-3. A fixed-size state holds a long random segment only in part: the repeated copy's
loss grows with the segment's length (see the table), so the acceptance bar is lower than for attention (repeated
copy below 0.6 of the first copy's loss, not 0.25; zero-ablating the last mixer costs more than 0.5 nats, not 1).
With the same settings, 800 steps reached a repeated-copy loss of 5.94 and 2500 steps 3.81 (segments of 40)."""


BLOOM_NOTES = """\
The recipe of `induction-2l` unchanged (batch 48, lr 6e-3, 2500 steps). ALiBi's penalty on distance shows: three
layer-1 heads share the copying (induction scores 0.29-0.31 each) and the repeated copy's loss grows with the
segment's length (see the table). A 600-step run of the same recipe reached a repeated-copy loss of 2.80."""


FAMILIES = {
    "llama": Family(
        "llama",
        "a 2-layer Llama (`LlamaForCausalLM`: RoPE, RMSNorm, SwiGLU MLP)",
        _llama,
        lambda m, i: m.model.layers[i].self_attn.o_proj,
        lambda m, i: m.model.layers[i].self_attn,
        TrainConfig(steps=3000),
        notes=LLAMA_NOTES,
    ),
    "bloom": Family(
        "bloom",
        "a 2-layer BLOOM (`BloomForCausalLM`: ALiBi position biases, LayerNorm, GELU MLP)",
        _bloom,
        lambda m, i: m.transformer.h[i].self_attention.dense,
        lambda m, i: m.transformer.h[i].self_attention,
        TrainConfig(),
        attention="eager",
        notes=BLOOM_NOTES,
    ),
    "deepseek_v2": Family(
        "deepseek_v2",
        "a 2-layer DeepSeek-V2 (`DeepseekV2ForCausalLM`: multi-head latent attention with RoPE; layer 0 a "
        "dense SwiGLU MLP, layer 1 a mixture of 4 routed experts, 2 per token, plus a shared expert)",
        _deepseek_v2,
        lambda m, i: m.model.layers[i].self_attn.o_proj,
        lambda m, i: m.model.layers[i].self_attn,
        TrainConfig(steps=2000, batch_size=96),
        notes=DEEPSEEK_V2_NOTES,
    ),
    "mamba2": Family(
        "mamba2",
        "a 2-layer Mamba-2 (`Mamba2ForCausalLM`: selective state-space mixers with 8 SSM heads of 32 channels, "
        "no attention, no positions)",
        _mamba2,
        None,
        lambda m, i: m.backbone.layers[i].mixer,
        TrainConfig(steps=4000, batch_size=16, lr=3e-3),
        # A fixed-size state holds a 40-word segment only in part: see the loss by segment length in the card.
        max_loss_ratio=0.6,
        min_mixer_effect=0.5,
        notes=MAMBA2_NOTES,
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--out", type=Path, default=None, help="default: examples/models/induction-<family>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(f"examples/models/induction-{args.family.replace('_', '-')}")
    return args


def batch_loss(model: PreTrainedModel, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    batch = make_batch(cfg, generator)
    return model(input_ids=batch, labels=batch).loss


def _zeroing_slice(start: int, stop: int) -> Callable:
    def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        hidden = args[0].clone()
        hidden[..., start:stop] = 0.0
        return (hidden, *args[1:])

    return hook


def _zero_output(_module: torch.nn.Module, _args: tuple, out: object) -> object:
    if isinstance(out, tuple):
        return (torch.zeros_like(out[0]), *out[1:])
    return torch.zeros_like(out)


def _repeated_loss(model: PreTrainedModel, tokens: torch.Tensor, length: int, handle_of: Callable) -> float:
    handle = handle_of()
    try:
        with torch.no_grad():
            logits = model(input_ids=tokens).logits
    finally:
        handle.remove()
    return half_losses(logits, tokens, length)[1]


def evaluate(model: PreTrainedModel, family: Family, eval_cfg: EvalConfig) -> Metrics:
    """Half losses, per-head scores (attention families) and zero-ablation effects on repeated sequences."""
    model.eval()
    tokens = make_repeated_batch(eval_cfg)
    length = eval_cfg.segment_len
    metrics: Metrics = {"segment_len": length, "eval_batch_size": eval_cfg.batch_size}
    with torch.no_grad():
        if family.head_output is not None:
            model.set_attn_implementation("eager")
            out = model(input_ids=tokens, output_attentions=True)
        else:
            out = model(input_ids=tokens)
    first, repeated = half_losses(out.logits, tokens, length)
    metrics.update(loss_first_half=first, loss_repeated_half=repeated)
    by_length = {}
    for n in SEGMENT_LENGTHS:
        short = make_repeated_batch(replace(eval_cfg, segment_len=n))
        with torch.no_grad():
            by_length[str(n)] = half_losses(model(input_ids=short).logits, short, n)[1]
    metrics["loss_repeated_half_by_length"] = by_length
    n_layers = model.config.num_hidden_layers
    metrics["ablate_mixer_loss"] = [
        _repeated_loss(model, tokens, length, lambda i=i: family.mixer(model, i).register_forward_hook(_zero_output))
        for i in range(n_layers)
    ]
    if family.head_output is None:
        return metrics
    induction, previous = head_scores(out.attentions, length)
    last = n_layers - 1
    top_head, low_head = int(induction[last].argmax()), int(induction[last].argmin())
    prev_head = int(previous[0].argmax())
    n_heads = induction.shape[1]
    width = family.head_output(model, last).in_features // n_heads

    def ablated(head: int) -> float:
        module = family.head_output(model, last)
        return _repeated_loss(
            model,
            tokens,
            length,
            lambda: module.register_forward_pre_hook(_zeroing_slice(head * width, (head + 1) * width)),
        )

    metrics.update(
        induction_scores=induction.tolist(),
        previous_token_scores=previous.tolist(),
        top_induction_head=[last, top_head],
        top_induction_score=induction[last, top_head].item(),
        previous_token_head=[0, prev_head],
        previous_token_score=previous[0, prev_head].item(),
        ablate_top_induction_loss=ablated(top_head),
        least_induction_head=[last, low_head],
        ablate_least_induction_loss=ablated(low_head),
    )
    return metrics


#: Segment lengths at which the repeated copy's loss is also reported (how far back the model can copy).
SEGMENT_LENGTHS = (10, 20, 40)


def check_acceptance(metrics: Metrics, family: Family) -> list[str]:
    base = metrics["loss_repeated_half"]
    ratio, effect = family.max_loss_ratio, family.min_mixer_effect
    checks = {
        f"repeated loss < {ratio} x first-half loss": base < metrics["loss_first_half"] * ratio,
        f"zero-ablating the last mixer raises loss by > {effect}": metrics["ablate_mixer_loss"][-1] > base + effect,
    }
    if "top_induction_score" in metrics:
        checks["top induction score > 0.3"] = metrics["top_induction_score"] > 0.3
        checks["ablating top induction head raises loss by > 0.3"] = metrics["ablate_top_induction_loss"] > base + 0.3
    return [name for name, ok in checks.items() if not ok]


def print_report(metrics: Metrics) -> None:
    print(f"loss first half     {metrics['loss_first_half']:.4f}")
    print(f"loss repeated half  {metrics['loss_repeated_half']:.4f}")
    for length, loss in metrics["loss_repeated_half_by_length"].items():
        print(f"loss repeated half, segments of {length}: {loss:.4f}")
    for i, loss in enumerate(metrics["ablate_mixer_loss"]):
        print(f"repeated-half loss, layer {i} token mixer zero-ablated: {loss:.4f}")
    for name in ("induction_scores", "previous_token_scores"):
        for i, row in enumerate(metrics.get(name, [])):
            print(f"{name:22s} L{i}: " + " ".join(f"{s:.3f}" for s in row))
    if "top_induction_head" in metrics:
        layer, head = metrics["top_induction_head"]
        print(
            f"top induction head {layer}.{head} score {metrics['top_induction_score']:.3f}, ablated loss "
            f"{metrics['ablate_top_induction_loss']:.4f}"
        )


def model_card(metrics: Metrics, family: Family, cfg: TrainConfig) -> str:
    name = f"induction-{family.name.replace('_', '-')}"
    rows = [
        f"| loss, first copy (targets 2..L; chance is ln 500 = 6.21) | {metrics['loss_first_half']:.4f} |",
        f"| loss, repeated copy (targets L+2..2L) | {metrics['loss_repeated_half']:.4f} |",
    ]
    rows += [
        f"| loss, repeated copy, segments of {length} words | {loss:.4f} |"
        for length, loss in metrics["loss_repeated_half_by_length"].items()
        if int(length) != metrics["segment_len"]
    ]
    rows += [
        f"| repeated-copy loss, layer {i}'s token mixer zero-ablated | {loss:.4f} |"
        for i, loss in enumerate(metrics["ablate_mixer_loss"])
    ]
    heads = ""
    if "top_induction_head" in metrics:
        layer, head = metrics["top_induction_head"]
        prev_layer, prev_head = metrics["previous_token_head"]
        low_layer, low_head = metrics["least_induction_head"]
        rows += [
            f"| top induction head (layer.head) | {layer}.{head}, score {metrics['top_induction_score']:.3f} |",
            f"| previous-token head | {prev_layer}.{prev_head}, score {metrics['previous_token_score']:.3f} |",
            f"| repeated-copy loss, head {layer}.{head} zero-ablated | {metrics['ablate_top_induction_loss']:.4f} |",
            f"| repeated-copy loss, head {low_layer}.{low_head} (lowest induction score) zero-ablated | "
            f"{metrics['ablate_least_induction_loss']:.4f} |",
        ]
        header = "| layer | " + " | ".join(f"h{h}" for h in range(len(metrics["induction_scores"][0]))) + " |"
        rule = "|---" * (len(metrics["induction_scores"][0]) + 1) + "|"
        heads = f"""
Induction score: mean attention from query `i` in the second copy to key `i - L + 1`; previous-token
score: mean attention from `i` to `i - 1`. Head ablation zeroes the head's slice of the input of the
attention's output projection.

Induction scores (rows: layer, columns: head):

{header}
{rule}
{format_scores(metrics["induction_scores"])}

Previous-token scores:

{header}
{rule}
{format_scores(metrics["previous_token_scores"])}
"""
    else:
        heads = """
Mamba-2 has no attention heads: what carries induction here is read from hooks alone by
`examples/one_study_every_family.py` (which mixer, which SSM heads and their effective attention).
"""
    table = "\n".join(rows)
    recipe = f"\n### Recipe: what worked, what did not\n\n{family.notes}\n" if family.notes else ""
    return f"""# {name}

{family.description[0].upper() + family.description[1:]}, {metrics["parameters"]:,} parameters, trained from
scratch on the task of [`induction-2l`](../induction-2l/README.md): random walks over per-sequence random
successor maps, so every sequence holds repeated random-token segments that can only be predicted from
context. Tokenizer: the word-level tokenizer of `induction-2l` (`t0` .. `t{NUM_WORDS - 1}`, ids 2..{VOCAB_SIZE - 1};
`<|endoftext|>` id 0 is bos/eos/pad; it does not add BOS itself, so prepend it).

## Training

- Command: `python examples/train_induction_family.py --family {family.name}` (from the repository root)
- Seed: {metrics["seed"]}; deterministic (`torch.use_deterministic_algorithms(True)`)
- Steps: {cfg.steps}, batch {cfg.batch_size} x {cfg.seq_len} tokens, AdamW lr {cfg.lr}
  (warmup {cfg.warmup_steps}, cosine to 10%), weight decay {cfg.weight_decay}, no dropout
- Training wall time: {metrics["train_seconds"]:.0f} s with {metrics["threads"]} CPU thread(s) on a shared machine;
  CPU time {metrics.get("train_cpu_seconds", float("nan")):.0f} s (what it costs on an idle machine)
{recipe}
## Evaluation

Batch of {metrics["eval_batch_size"]} sequences: BOS + random segment of length L={metrics["segment_len"]} +
the same segment again.

| metric | value |
|---|---|
{table}
{heads}"""


def main() -> None:
    args = parse_args()
    family = FAMILIES[args.family]
    cfg = family.train if args.steps is None else replace(family.train, steps=args.steps)
    training.run(
        args,
        family.build,
        build_tokenizer(),
        training.Schedule(cfg.steps, cfg.lr, cfg.warmup_steps, cfg.weight_decay, floor=0.1),
        lambda model, generator: batch_loss(model, cfg, generator),
        lambda model: evaluate(model, family, EvalConfig()),
        lambda metrics: check_acceptance(metrics, family),
        print_report,
        lambda metrics: model_card(metrics, family, cfg),
    )


if __name__ == "__main__":
    main()
