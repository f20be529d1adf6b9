"""Plant mistakes one at a time and report which tests catch each (``make mutate``; not part of ``make test``).

    python tools/mutate.py                       # the adapter mistakes, each against conformance_test alone
    python tools/mutate.py --group core          # core bugs (special tokens, SAEs, seam…) against core's tests
    python tools/mutate.py --only gpt2-act-fn    # one mutation (repeatable)
    python tools/mutate.py --list                # what there is

Each mutation is one or more text replacements in source files, undone afterwards (also on Ctrl-C). The adapter
mistakes are realistic slips in a family's adapter, examples-facing config or component (a wrong path, layout,
option, activation, flag…), none of them one of those the conformance kit was extended for; each runs only the
conformance kit (``conformance_test``: every check, both attention paths) on that family's model, so the report says
how many mistakes ``conformance_test`` alone catches. A mutation nothing catches is listed: a hole in the kit, or a
mistake with no observable effect (the report says which it is believed to be, ``harmless``). Exits 1 if a mutation
not marked harmless is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Family → its conformance test module (``conformance_test(ADAPTERS)``).
KIT = {
    "gpt2": "bridge_gpt2/tests/test_gpt2_conformance.py",
    "llama": "bridge_llama/tests/test_llama_conformance.py",
    "mamba": "bridge_mamba/tests/test_mamba_conformance.py",
    "vision": "bridge_vision/tests/test_vision_conformance.py",
    "alibi": "plugins/bridge_alibi/tests/test_alibi_conformance.py",
    "mla": "plugins/bridge_mla/tests/test_mla_conformance.py",
}
CORE_TESTS = ["core/tests"]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    #: ``(family, model id)``: conformance_test of that family, on that model only; None: core's tests.
    target: tuple[str, str] | None = None
    group: str = "adapters"
    #: Believed to change nothing the model computes (documented, not counted as a hole in the kit).
    harmless: str = ""
    #: Core mutations: the core test files to run (default: all of core's tests).
    extra: tuple[str, ...] = field(default_factory=tuple)

    def pytest_args(self) -> list[str]:
        if self.target is None:
            return list(self.extra) or CORE_TESTS
        family, model = self.target
        return [KIT[family], "-m", "not variants", "-k", f"{model}-"]

    def env(self) -> dict[str, str]:
        return {"BRIDGE_LOAD_PLUGINS": ""} if self.target is None else {}


def m(name, path, old, new, target=None, **kw) -> Mutation:
    return Mutation(name, path, ((old, new),), target, **kw)


GPT2 = "bridge_gpt2/src/bridge_gpt2"
LLAMA = "bridge_llama/src/bridge_llama"
MAMBA = "bridge_mamba/src/bridge_mamba"
VISION = "bridge_vision/src/bridge_vision"
ALIBI = "plugins/bridge_alibi/src/bridge_alibi"
MLA = "plugins/bridge_mla/src/bridge_mla"

ADAPTER_MUTATIONS = [
    # ----------------------------------------------------------------------------------------- bridge-gpt2
    m(
        "gpt2-act-fn-exact-gelu",
        f"{GPT2}/adapters.py",
        'return {"d_mlp": c.n_inner or 4 * c.n_embd, "act_fn": c.activation_function}',
        'return {"d_mlp": c.n_inner or 4 * c.n_embd, "act_fn": "gelu"}',
        ("gpt2", "GPT2LMHeadModel"),
    ),
    m(
        "neox-fused-qkv-read-as-grouped",
        f"{GPT2}/adapters.py",
        '"qkv": FusedQKV("query_key_value", layout="per_head"),',
        '"qkv": FusedQKV("query_key_value", layout="grouped"),',
        ("gpt2", "GPTNeoXForCausalLM"),
    ),
    m(
        "neox-parallel-residual-wired-sequential",
        f"{GPT2}/adapters.py",
        "wiring = ParallelBlock if cfg.parallel_attn_mlp else SequentialBlock",
        "wiring = SequentialBlock",
        ("gpt2", "GPTNeoXForCausalLM"),
    ),
    m(
        "bigcode-multi-query-kv-heads-ignored",
        f"{GPT2}/adapters.py",
        '"n_key_value_heads": 1 if c.multi_query else c.n_head,',
        '"n_key_value_heads": c.n_head,',
        ("gpt2", "GPTBigCodeForCausalLM"),
    ),
    m(
        "gptneo-scores-scaled-by-sqrt-d",
        f"{GPT2}/split_qkv_components.py",
        "m, query.float(), key.float(), value.float(), mask, scaling=1.0, dropout=m.attn_dropout.p",
        "m, query.float(), key.float(), value.float(), mask, scaling=None, dropout=m.attn_dropout.p",
        ("gpt2", "GPTNeoForCausalLM"),
    ),
    m(
        "gptj-rotary-halves-instead-of-adjacent-pairs",
        f"{GPT2}/gptj_adapters.py",
        '"rotary_adjacent_pairs": True,',
        '"rotary_adjacent_pairs": False,',
        ("gpt2", "GPTJForCausalLM"),
        harmless="a cfg flag for analysis code; no check reads it (the rotary itself is HF's)",
    ),
    m(
        "codegen-partition-order-qkv",
        f"{GPT2}/gptj_attention.py",
        'CODEGEN_QKV = FusedQKV("qkv_proj", layout="partitioned", partitions=CODEGEN_PARTITIONS, order="qvk")',
        'CODEGEN_QKV = FusedQKV("qkv_proj", layout="partitioned", partitions=CODEGEN_PARTITIONS, order="qkv")',
        ("gpt2", "CodeGenForCausalLM"),
    ),
    m(
        "xglm-embed-scale-forgotten",
        f"{GPT2}/split_qkv_adapters.py",
        '"extra": {"embed_scale": c.d_model**0.5 if c.scale_embedding else 1.0},',
        '"extra": {"embed_scale": 1.0},',
        ("gpt2", "XGLMForCausalLM"),
    ),
    m(
        "xglm-norms-swapped",
        f"{GPT2}/split_qkv_adapters.py",
        '"ln1": Spec(Norm, "self_attn_layer_norm"),\n                    "attn": Spec(XGLMAttention, "self_attn"),\n'
        '                    "ln2": Spec(Norm, "final_layer_norm"),',
        '"ln1": Spec(Norm, "final_layer_norm"),\n                    "attn": Spec(XGLMAttention, "self_attn"),\n'
        '                    "ln2": Spec(Norm, "self_attn_layer_norm"),',
        ("gpt2", "XGLMForCausalLM"),
    ),
    m(
        "gpt2-mlp-paths-swapped",
        f"{GPT2}/adapters.py",
        '"mlp": Spec(MLP, "mlp", {"pre": "c_fc", "out": "c_proj"}),',
        '"mlp": Spec(MLP, "mlp", {"pre": "c_proj", "out": "c_fc"}),',
        ("gpt2", "GPT2LMHeadModel"),
    ),
    # ----------------------------------------------------------------------------------------- bridge-llama
    m(
        "gemma-norm-without-one-plus-w",
        f"{LLAMA}/adapters.py",
        'GEMMA_RMS = {"kind": "RMS", "weight_offset": 1.0}',
        'GEMMA_RMS = {"kind": "RMS", "weight_offset": 0.0}',
        ("llama", "Gemma2ForCausalLM"),
    ),
    m(
        "gemma2-post-norms-swapped",
        f"{LLAMA}/adapters.py",
        '        "ln1_post": "post_attention_layernorm",\n        "ln2": "pre_feedforward_layernorm",\n'
        '        "ln2_post": "post_feedforward_layernorm",',
        '        "ln1_post": "post_feedforward_layernorm",\n        "ln2": "pre_feedforward_layernorm",\n'
        '        "ln2_post": "post_attention_layernorm",',
        ("llama", "Gemma2ForCausalLM"),
    ),
    m(
        "phi3-gate-up-views-swapped",
        "core/src/bridge/kernel/components/mlp.py",  # GateUpMLP: core since the hybrids needed it
        "gate, up = fused.chunk(2, dim=-1)  # [d_model, d_mlp] ×2",
        "up, gate = fused.chunk(2, dim=-1)  # [d_model, d_mlp] ×2",
        ("llama", "Phi3ForCausalLM"),
    ),
    m(
        "olmo2-qk-norm-layout-per-head",
        f"{LLAMA}/adapters.py",
        '{**LLAMA_ATTN, "norm_layout": "flat"}',
        '{**LLAMA_ATTN, "norm_layout": "bphd"}',
        ("llama", "Olmo2ForCausalLM"),
    ),
    m(
        "qwen3-qk-norm-layout-after-transpose",
        f"{LLAMA}/adapters.py",
        'attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bphd"})\n\n\nclass Phi3Adapter',
        'attention = (QKNormAttention, {**LLAMA_ATTN, "norm_layout": "bhpd"})\n\n\nclass Phi3Adapter',
        ("llama", "Qwen3ForCausalLM"),
    ),
    m(
        "llama-act-fn-gelu",
        f"{LLAMA}/adapters.py",
        '"act_fn": getattr(c, "hidden_activation", None) or c.hidden_act,',
        '"act_fn": "gelu",',
        ("llama", "LlamaForCausalLM"),
    ),
    m(
        "mistral-sliding-window-dropped-from-cfg",
        f"{LLAMA}/adapters.py",
        '"sliding_window": getattr(c, "sliding_window", None),',
        '"sliding_window": None,',
        ("llama", "MistralForCausalLM"),
        harmless="cfg.extra only; the window is in the mask HF builds",
    ),
    m(
        "mixtral-router-weights-not-renormalized",
        f"{LLAMA}/moe_adapters.py",
        'return softmax_then_topk(normalize=bool(getattr(self.hf_config, "norm_topk_prob", False)))',
        "return softmax_then_topk(normalize=False)",
        ("llama", "MixtralForCausalLM"),
    ),
    m(
        "cohere-layer-norm-as-rms",
        f"{LLAMA}/parallel_adapters.py",
        "RoPE on adjacent pairs, optional per-head q/k LayerNorms (``use_qk_norm``), logits times ``logit_scale``\n"
        '    (in ``W_U``)."""\n\n    architectures = ("CohereForCausalLM",)\n    model_types = ("cohere",)\n'
        "    norm = LN",
        "RoPE on adjacent pairs, optional per-head q/k LayerNorms (``use_qk_norm``), logits times ``logit_scale``\n"
        '    (in ``W_U``)."""\n\n    architectures = ("CohereForCausalLM",)\n    model_types = ("cohere",)\n'
        '    norm = {"kind": "RMS"}',
        ("llama", "CohereForCausalLM"),
    ),
    m(
        "granite-residual-multiplier-dropped",
        f"{LLAMA}/dense_components.py",
        "self.residual_scale = float(hf_module.residual_multiplier)",
        "self.residual_scale = 1.0",
        ("llama", "GraniteForCausalLM"),
    ),
    m(
        "qwen2moe-shared-expert-gate-dropped",
        f"{LLAMA}/moe_adapters.py",
        '"shared_expert": "shared_expert", "shared_expert_gate": "shared_expert_gate"}',
        '"shared_expert": "shared_expert"}',
        ("llama", "Qwen2MoeForCausalLM"),
    ),
    # ----------------------------------------------------------------------------------------- bridge-mamba
    m(
        "mamba-hidden-states-said-to-start-with-embeddings",
        f"{MAMBA}/adapters.py",
        "hidden_states_include_embeddings = False  # HF: (block_0, ..., block_{n-1}, norm_f(block_{n-1}))",
        "hidden_states_include_embeddings = True",
        ("mamba", "MambaForCausalLM"),
    ),
    m(
        "mamba-residual-fp32-ignored",
        f"{MAMBA}/blocks.py",
        'residual = resid_pre.to(torch.float32) if getattr(self.hf_module, "residual_in_fp32", False) else resid_pre',
        "residual = resid_pre",
        ("mamba", "MambaForCausalLM"),
        harmless="the kit's models are float32: casting float32 to float32 changes nothing",
    ),
    m(
        "mamba-mixer-in-before-the-norm",
        f"{MAMBA}/blocks.py",
        "mixer_in = self.hook_mixer_in(norm(resid_pre.to(dtype=norm.weight.dtype)))",
        "mixer_in = norm(self.hook_mixer_in(resid_pre).to(dtype=norm.weight.dtype))",
        ("mamba", "MambaForCausalLM"),
    ),
    m(
        "mamba-x-proj-hook-on-dt-proj",
        f"{MAMBA}/mixers.py",
        'super().__init__(hf_module, cfg, {"hook_in_proj": "in_proj", "hook_x_proj": "x_proj"}, output_hook)',
        'super().__init__(hf_module, cfg, {"hook_in_proj": "in_proj", "hook_x_proj": "dt_proj"}, output_hook)',
        ("mamba", "MambaForCausalLM"),
    ),
    m(
        "mamba2-inner-norm-hook-on-in-proj",
        f"{MAMBA}/mixers.py",
        'super().__init__(hf_module, cfg, {"hook_in_proj": "in_proj", "hook_inner_norm": "norm"}, output_hook)',
        'super().__init__(hf_module, cfg, {"hook_in_proj": "norm", "hook_inner_norm": "in_proj"}, output_hook)',
        ("mamba", "Mamba2ForCausalLM"),
    ),
    # ----------------------------------------------------------------------------------------- bridge-vision
    m(
        "clip-vision-no-cls-position",
        f"{VISION}/adapters.py",
        'model_types = ("clip_vision_model",)\n'
        '    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}\n'
        "    cls_position = True",
        'model_types = ("clip_vision_model",)\n'
        '    output_fields: ClassVar[dict[str, Any]] = {"hidden": "last_hidden_state", "pooled": "pooler_output"}\n'
        "    cls_position = False",
        ("vision", "CLIPVisionModel"),
    ),
    m(
        "vision-attention-out-on-v-proj",
        f"{VISION}/towers.py",
        '"attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "out_proj"}),',
        '"attn": Spec(Attention, "self_attn", {"qkv": SplitQKV(), "out": "v_proj"}),',
        ("vision", "SiglipVisionModel"),
    ),
    m(
        "clip-ln-pre-on-ln-post",
        f"{VISION}/towers.py",
        '"ln_pre": Spec(Norm, "pre_layrnorm"),',
        '"ln_pre": Spec(Norm, "post_layernorm"),',
        ("vision", "CLIPVisionModel"),
    ),
    m(
        "vision-tower-mlp-paths-swapped",
        f"{VISION}/towers.py",
        '"ln2": Spec(Norm, "layer_norm2"),\n        "mlp": Spec(MLP, "mlp", {"pre": "fc1", "out": "fc2"}),',
        '"ln2": Spec(Norm, "layer_norm2"),\n        "mlp": Spec(MLP, "mlp", {"pre": "fc2", "out": "fc1"}),',
        ("vision", "SiglipVisionModel"),
    ),
    # ----------------------------------------------------------------------------------------- bridge-alibi
    m(
        "bloom-act-fn-exact-gelu",
        f"{ALIBI}/adapters.py",
        '"act_fn": "gelu_new",  # BLOOM\'s tanh approximation',
        '"act_fn": "gelu",',
        ("alibi", "BloomForCausalLM"),
    ),
    m(
        "bloom-fused-qkv-read-as-grouped",
        f"{ALIBI}/attention.py",
        'fused_layout: FusedLayout = "per_head"',
        'fused_layout: FusedLayout = "grouped"',
        ("alibi", "BloomForCausalLM"),
    ),
    m(
        "mpt-mlp-paths-swapped",
        f"{ALIBI}/adapters.py",
        '"mlp": Spec(MLP, "ffn", {"pre": "up_proj", "out": "down_proj"}),',
        '"mlp": Spec(MLP, "ffn", {"pre": "down_proj", "out": "up_proj"}),',
        ("alibi", "MptForCausalLM"),
    ),
    m(
        "falcon-scores-unscaled",
        f"{ALIBI}/attention.py",
        "            scale=hf.inv_norm_factor,\n            bias=bias,",
        "            scale=1.0,\n            bias=bias,",
        ("alibi", "FalconForCausalLM"),
    ),
    # ----------------------------------------------------------------------------------------- bridge-mla
    m(
        "mla-value-head-size-as-query",
        f"{MLA}/adapters.py",
        '"d_head_v": c.v_head_dim,  # v, z',
        '"d_head_v": c.qk_nope_head_dim + c.qk_rope_head_dim,  # v, z',
        ("mla", "DeepseekV2ForCausalLM"),
    ),
    m(
        "mla-mlp-norm-as-layer-norm",
        f"{MLA}/adapters.py",
        '"ln2": Spec(Norm, "post_attention_layernorm", {"kind": "RMS"}),',
        '"ln2": Spec(Norm, "post_attention_layernorm", {"kind": "LN"}),',
        ("mla", "DeepseekV3ForCausalLM"),
    ),
]

CORE = "core/src/bridge"
CORE_MUTATIONS = [
    m(
        "prepend-eos-instead-of-bos",
        f"{CORE}/kernel/tokens.py",
        "bos = [tok.bos_token_id] if prepend_bos and tok.bos_token_id is not None else []",
        "bos = [tok.eos_token_id] if prepend_bos and tok.bos_token_id is not None else []",
        group="core",
        extra=("core/tests/test_special_tokens.py", "core/tests/test_core_model.py"),
    ),
    m(
        "pad-with-bos",
        f"{CORE}/kernel/tokens.py",
        "for value in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):",
        "for value in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):",
        group="core",
        extra=("core/tests/test_special_tokens.py", "core/tests/test_core_model.py"),
    ),
    m(
        "generation-stops-at-bos",
        f"{CORE}/analysis/generation.py",
        'tokenizer_eos = getattr(tokenizer, "eos_token_id", None)',
        'tokenizer_eos = getattr(tokenizer, "bos_token_id", None)',
        group="core",
        extra=("core/tests/test_special_tokens.py", "core/tests/test_generate.py"),
    ),
    m(
        "harvest-separates-documents-with-bos",
        f"{CORE}/harvest/writer.py",
        '"separator": eos if eos is not None else bos,',
        '"separator": bos,',
        group="core",
        extra=("core/tests/test_harvest.py",),
    ),
    m(
        "sae-error-term-with-gradient",
        f"{CORE}/analysis/saes.py",
        "with torch.no_grad(), self._swapped({n: nn.Identity() for n in self.inner}):",
        "with self._swapped({n: nn.Identity() for n in self.inner}):",
        group="core",
        extra=("core/tests/test_saes.py",),
    ),
    Mutation(  # both places that order shards: writing the index and merging the ranks' parts
        "harvest-shards-merged-in-string-order",
        f"{CORE}/harvest/writer.py",
        tuple(
            (f"{before}{sort}int(item[0])))", f"{before}{sort}item[0]))")
            for before in ('in id order."""\n    ', 'entries.get("n_shards", n_shards)\n    ')
            for sort in ['index["shards"] = dict(sorted(index["shards"].items(), key=lambda item: ']
        ),
        group="core",
        extra=("core/tests/test_harvest.py",),
    ),
    m(
        "pattern-hook-return-ignored",
        f"{CORE}/kernel/seam.py",
        "        pattern = on_pattern(pattern)",
        "        on_pattern(pattern)",
        group="core",
        extra=("core/tests/test_kit.py", "core/tests/test_public_block_api.py", "-k", "GPT2 or kit"),
    ),
    m(
        "ln-eps-dropped",
        f"{CORE}/kernel/components/norm.py",
        "rstd = torch.rsqrt(mean_square + self.eps)",
        "rstd = torch.rsqrt(mean_square)",
        group="core",
        extra=("core/tests/test_public_block_api.py", "-k", "conformance and GPT2"),
    ),
    m(
        "masked-loss-counts-targets-after-padding",
        f"{CORE}/kernel/loss.py",
        "valid = (attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()).to(nll.dtype)",
        "valid = attention_mask[:, :-1].bool().to(nll.dtype)",
        group="core",
        extra=("core/tests/test_glue.py", "core/tests/test_public_block_api.py", "-k", "loss"),
    ),
    m(
        "incl-bwd-twice-the-gradient",
        f"{CORE}/kernel/hooked_model.py",
        'store[f"{hook.name}_grad"] = kept if device is None else kept.to(device)',
        'store[f"{hook.name}_grad"] = 2 * kept if device is None else kept.to(device)',
        group="core",
        extra=("core/tests/test_public_block_api.py", "-k", "conformance and GPT2 and gradients"),
    ),
]

MUTATIONS = ADAPTER_MUTATIONS + CORE_MUTATIONS


def failing_tests(pytest_args: list[str], env: dict[str, str]) -> tuple[list[str], str]:
    """The ids of the tests that fail (or error) under ``pytest_args``, and pytest's summary line."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *pytest_args]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    return failed, summary


def by_check(test_ids: list[str]) -> dict[str, int]:
    """How many failing cases per check (the part of the id naming a ``check_…``), else per test."""
    names = [next(iter(re.findall(r"check_\w+", t)), t.split("::")[-1].split("[")[0]) for t in test_ids]
    return dict(Counter(names).most_common())


def apply(mutation: Mutation) -> str:
    """Apply the mutation's edits; returns the original source."""
    path = ROOT / mutation.path
    source = path.read_text()
    text = source
    for old, new in mutation.edits:
        if text.count(old) != 1:
            raise SystemExit(f"{mutation.name}: the text to replace occurs {text.count(old)} times in {path}")
        text = text.replace(old, new)
    path.write_text(text)
    return source


def run(mutation: Mutation) -> list[str]:
    path = ROOT / mutation.path
    source = apply(mutation)
    try:
        failed, summary = failing_tests(mutation.pytest_args(), mutation.env())
    finally:
        path.write_text(source)
    verdict = f"caught by {len(failed)} tests: {by_check(failed)}" if failed else "NOT CAUGHT"
    note = f" (believed harmless: {mutation.harmless})" if mutation.harmless and not failed else ""
    print(f"{mutation.name}: {verdict}{note}  [{summary}]", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    parser.add_argument("--group", choices=["adapters", "core", "all"], default="adapters")
    parser.add_argument("--list", action="store_true", help="list the mutations and check they apply")
    args = parser.parse_args()
    chosen = [
        m
        for m in MUTATIONS
        if (args.group == "all" or m.group == args.group) and (not args.only or m.name in args.only)
    ]
    if args.list:
        for mutation in chosen:
            source = apply(mutation)
            (ROOT / mutation.path).write_text(source)
            print(f"{mutation.group:8} {mutation.name:50} {' '.join(mutation.pytest_args())}")
        return
    baselines = {tuple(m.pytest_args()) for m in chosen}
    for baseline in sorted(baselines):
        env = next(m.env() for m in chosen if tuple(m.pytest_args()) == baseline)
        failed, summary = failing_tests(list(baseline), env)
        if failed:
            raise SystemExit(f"unmutated, {' '.join(baseline)} already fails {len(failed)} tests ({summary})")
        print(f"baseline {' '.join(baseline)}: {summary}", flush=True)
    missed = [m for m in chosen if not run(m)]
    holes = [m.name for m in missed if not m.harmless]
    caught = len(chosen) - len(missed)
    print(f"{caught} of {len(chosen)} mutations caught" + (f"; missed: {[m.name for m in missed]}" if missed else ""))
    sys.exit(1 if holes else 0)


if __name__ == "__main__":
    main()
