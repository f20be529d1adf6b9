"""Tiny models for tests: built from HF config classes with fixed seeds, saved and loaded
through the real path, with a tokenizer trained locally with ``tokenizers``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.pytorch_utils import Conv1D

from bridge.kernel.tiny import TINY_BOS_ID, TINY_EOS_ID, TINY_PAD_ID, TINY_VOCAB

#: The tiny tokenizer's special tokens; trained first, they get ids 0, 1, 2, 3 (``TINY_PAD_ID``, ``TINY_BOS_ID``,
#: ``TINY_EOS_ID``, then unk).
PAD, BOS, EOS, UNK = "<pad>", "<|bos|>", "<|endoftext|>", "<unk>"
SPECIALS = tuple(token for _, token in sorted({TINY_PAD_ID: PAD, TINY_BOS_ID: BOS, TINY_EOS_ID: EOS, 3: UNK}.items()))
_CORPUS = [
    "The cat sat on the mat and the dog sat on the log.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "In the beginning the model was random, and then it learned to copy tokens it had seen before.",
    "Attention heads move information between positions; MLPs act on each position alone.",
    "Hello world! Numbers like 1 2 3 4 5 6 7 8 9 0 and symbols , . ; : ? ! appear too.",
]


def tiny_tokenizer(vocab_size: int = TINY_VOCAB, *, bos: bool = True, pad: bool = True) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained here on a fixed corpus, with distinct special ids: ``<pad>`` 0, ``<|bos|>`` 1,
    ``<|endoftext|>`` (EOS) 2 (``bridge.kernel.tiny``). ``bos=False``: a tokenizer without a BOS token (a model that
    has none); ``pad=False``: one without a padding token (the ids stay where they are, unnamed)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained(vocab_size)),
        bos_token=BOS if bos else None,
        eos_token=EOS,
        pad_token=PAD if pad else None,
        unk_token=UNK,
    )


@cache
def _trained(vocab_size: int) -> str:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def build_tiny_model(hf_config: Any, seed: int = 0, attn_implementation: str | None = None) -> torch.nn.Module:
    """The HF model class named by ``hf_config.architectures[0]``, randomly initialised with ``seed``."""
    cls = getattr(transformers, hf_config.architectures[0])
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return cls._from_config(hf_config, **kwargs).eval()


def save_tiny_model(hf_config: Any, directory: str | Path, seed: int = 0, matrices: bool = True) -> Path:
    """Save a seeded, ``sensitize``d tiny model (safetensors) and the tiny tokenizer to ``directory``
    (``matrices=False``: keep the config's own initialisation of the matrices)."""
    directory = Path(directory)
    model = build_tiny_model(hf_config, seed)
    sensitize(model, seed, matrices=matrices)
    model.save_pretrained(directory, safe_serialization=True)
    tiny_tokenizer(getattr(hf_config, "vocab_size", TINY_VOCAB)).save_pretrained(directory)
    return directory


def sensitize(model: torch.nn.Module, seed: int = 0, matrices: bool = True) -> None:
    """Make a tiny model's every activation matter to its output, in place.

    HF initialises matrices with std 0.02, so attention scores are ~1e-3 and patterns nearly uniform: a
    wrong key moves logits by ~1e-8, invisible to any comparison. Here every ``nn.Linear``/``Conv1D``
    weight is redrawn with std ``1/sqrt(fan_in)`` and every ``nn.Embedding`` with std ``1/sqrt(dim)``
    (activations and logits of order 1), and every 1-D parameter (norm weights, biases; HF sets them to
    1 and 0) gets noise of std 0.1, so that a bug that drops or misplaces one shows in the comparisons.
    A matrix a module holds itself that HF initialises to zeros (Gemma 3's image projection ``[d_in, d_out]``,
    applied as ``x @ W``) would make everything before it dead: it is redrawn with std ``1/sqrt(d_in)``; a
    zero-initialised parameter of more dimensions (DINOv2's register tokens ``[1, r, d]``) with std ``1/sqrt(d)``.
    ``matrices=False`` leaves the matrices as they are.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules() if matrices else ():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.nn.Parameter) or id(weight) in seen or weight.ndim != 2:
                continue
            if isinstance(module, torch.nn.Linear):
                fan_in = weight.shape[1]
            elif isinstance(module, Conv1D):
                fan_in = weight.shape[0]  # stored [in, out]
            elif isinstance(module, torch.nn.Embedding):
                fan_in = weight.shape[1]
            else:
                continue
            seen.add(id(weight))
            weight.copy_(torch.randn(weight.shape, generator=generator) / fan_in**0.5)
        for module in model.modules() if matrices else ():
            if isinstance(module, torch.nn.Linear | torch.nn.Embedding | Conv1D):
                continue
            for param in module.parameters(recurse=False):
                if param.ndim >= 2 and param.is_floating_point() and not param.any():
                    fan_in = param.shape[0] if param.ndim == 2 else param.shape[-1]
                    param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        for _, param in model.named_parameters():
            if param.ndim == 1 and param.is_floating_point():
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def populate_hub_cache(source: str | Path, cache_dir: str | Path, repo_id: str, revision: str = "main") -> Path:
    """Lay out ``source``'s files in ``cache_dir`` as the hub client does for ``repo_id``:
    ``models--org--name/{blobs/<sha256>, refs/<revision>, snapshots/<commit>/<file> → blob}``.
    With ``HF_HUB_CACHE=cache_dir`` and ``HF_HUB_OFFLINE=1`` the name then loads offline."""
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in Path(source).rglob("*") if p.is_file())
    commit = hashlib.sha1("".join(str(p.relative_to(source)) for p in files).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../" * (len(link.relative_to(repo).parts) - 1)) / "blobs" / digest)
    return snapshot


def run_isolated(
    script: str, plugins: str | None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter that loads only the ``plugins`` distributions (comma list;
    ``""`` none, ``None`` all) and never reaches the network (``HF_HUB_OFFLINE=1``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PYTHONPATH"))}
    environment.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    if plugins is not None:
        environment["BRIDGE_LOAD_PLUGINS"] = plugins
    environment.update(env or {})
    command = [sys.executable, "-c", textwrap.dedent(script)]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
