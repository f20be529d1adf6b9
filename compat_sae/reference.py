"""SAELens's numbers, computed here by hand: on the independent HF model (forward hooks on its
blocks) and on the bridge (``run_with_hooks``), with the SAE applied from its weights."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

import bridge

Edit = Callable[[torch.Tensor], torch.Tensor]  # [batch, pos, d_model] -> the same


def sae_reconstruction(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A standard (ReLU) SAE by hand from its weights: ``(features [..., d_sae], x_hat [..., d_in])``."""
    features = torch.relu((x - sae.b_dec * sae.cfg.apply_b_dec_to_input) @ sae.W_enc + sae.b_enc)
    return features, features @ sae.W_dec + sae.b_dec


def hf_blocks(hf_model: nn.Module) -> nn.ModuleList:
    """The HF model's list of residual blocks."""
    base = getattr(hf_model, hf_model.base_model_prefix)
    for name in ("h", "layers"):
        if isinstance(getattr(base, name, None), nn.ModuleList):
            return getattr(base, name)
    raise AssertionError(f"no block list found on {type(base).__name__}")


@contextlib.contextmanager
def block_output_edited(hf_model: nn.Module, layer: int, edit: Edit) -> Iterator[None]:
    """Within the block, block ``layer``'s output hidden states ``[b, p, d_model]`` are ``edit``-ed."""

    def hook(_module: nn.Module, _args: tuple, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    handle = hf_blocks(hf_model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def hf_block_output(hf_model: nn.Module, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """The output hidden states of HF block ``layer`` ``[b, p, d_model]``, read by a forward hook on it
    (``hidden_states`` is no common reference: Mamba's omits the embeddings, so its entry ``i`` is block
    ``i``'s output, where for the transformers it is block ``i - 1``'s)."""
    seen: list[torch.Tensor] = []

    def keep(act: torch.Tensor) -> torch.Tensor:
        seen.append(act.detach().clone())
        return act

    with block_output_edited(hf_model, layer, keep):
        hf_model(input_ids=tokens)
    return seen[0]


@torch.no_grad()
def hf_block_input(hf_model: nn.Module, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """The hidden states entering HF block ``layer`` ``[b, p, d_model]``, read by a forward pre-hook on it."""
    seen: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handle = hf_blocks(hf_model)[layer].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        hf_model(input_ids=tokens)
    finally:
        handle.remove()
    return seen[0]


def hf_attention_out_projection(hf_model: nn.Module, layer: int) -> nn.Module:
    """The linear map from block ``layer``'s concatenated heads to the residual stream (its input is
    the heads' outputs ``[b, p, n_heads * d_head]``, ``hook_z`` flattened)."""
    block = hf_blocks(hf_model)[layer]
    attention = getattr(block, "self_attn", None) or block.attn
    return getattr(attention, "o_proj", None) or attention.c_proj


@contextlib.contextmanager
def module_input_edited(module: nn.Module, edit: Edit) -> Iterator[None]:
    """Within the block, ``module``'s (first) input is ``edit``-ed."""

    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (edit(args[0]), *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def hf_module_input(hf_model: nn.Module, module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """What ``module`` receives as its first input when the HF model runs on ``tokens``."""
    seen: list[torch.Tensor] = []

    def keep(act: torch.Tensor) -> torch.Tensor:
        seen.append(act.detach().clone())
        return act

    with module_input_edited(module, keep):
        hf_model(input_ids=tokens)
    return seen[0]


@torch.no_grad()
def hf_logits(hf_model: nn.Module, tokens: torch.Tensor, layer: int | None = None, edit: Edit | None = None):
    """HF logits ``[b, p, d_vocab]``, with block ``layer``'s output edited if ``edit`` is given."""
    if edit is None:
        return hf_model(input_ids=tokens).logits
    with block_output_edited(hf_model, layer, edit):
        return hf_model(input_ids=tokens).logits


@torch.no_grad()
def bridge_logits(model: bridge.Bridge, tokens: torch.Tensor, hook_name: str, edit: Edit | None = None):
    """The bridge's logits ``[b, p, d_vocab]``, with ``hook_name`` edited by a hook if ``edit`` is given."""
    if edit is None:
        return model(tokens)
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: edit(act))])


def next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each next token ``[b, p - 1]``: ``-log softmax(logits[:, i])[tokens[:, i + 1]]``."""
    log_probs = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]


def kl_from(original: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``KL(p_original ‖ p_new)`` at every position ``[b, p]``."""
    log_p, log_q = torch.log_softmax(original.double(), -1), torch.log_softmax(new.double(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def sae_splice(sae, keep: torch.Tensor) -> Edit:
    """Replace the activation by its SAE reconstruction where ``keep`` ``[b, p]`` is True."""

    def edit(act: torch.Tensor) -> torch.Tensor:
        return torch.where(keep[..., None], sae_reconstruction(sae, act)[1], act)

    return edit


def zero_ablation(act: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(act)


def downstream_metrics(logits_of: Callable[[torch.Tensor, Edit | None], torch.Tensor], sae, batches, special):
    """SAELens's CE and KL metrics by hand over ``batches`` of tokens ``[b, p]``: per-position values
    at positions whose input token is not in ``special``, averaged over every batch.
    ``logits_of(tokens, edit)`` runs the model with the hook point edited (or not, for ``None``)."""
    per_metric: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "kl_with_sae", "kl_abl")
    }
    for tokens in batches:
        keep = ~torch.isin(tokens, special)  # [b, p]
        clean = logits_of(tokens, None)
        spliced = logits_of(tokens, sae_splice(sae, keep))
        ablated = logits_of(tokens, zero_ablation)
        per_metric["ce_loss_without_sae"].append(next_token_ce(clean, tokens)[keep[:, :-1]])
        per_metric["ce_loss_with_sae"].append(next_token_ce(spliced, tokens)[keep[:, :-1]])
        per_metric["ce_loss_with_ablation"].append(next_token_ce(ablated, tokens)[keep[:, :-1]])
        per_metric["kl_with_sae"].append(kl_from(clean, spliced)[keep])
        per_metric["kl_abl"].append(kl_from(clean, ablated)[keep])
    means = {k: torch.cat(v).mean().item() for k, v in per_metric.items()}
    return {
        "ce_loss_without_sae": means["ce_loss_without_sae"],
        "ce_loss_with_sae": means["ce_loss_with_sae"],
        "ce_loss_with_ablation": means["ce_loss_with_ablation"],
        "ce_loss_score": (means["ce_loss_with_ablation"] - means["ce_loss_with_sae"])
        / (means["ce_loss_with_ablation"] - means["ce_loss_without_sae"]),
        "kl_div_with_sae": means["kl_with_sae"],
        "kl_div_with_ablation": means["kl_abl"],
    }


def reconstruction_metrics(sae, activations: list[torch.Tensor], tokens: list[torch.Tensor], special):
    """SAELens's reconstruction metrics by hand over activations ``[b, p, d_in]`` at non-special tokens:
    ``mse`` (squared error summed over ``d_in``, mean over tokens), ``explained_variance``
    (``1 - mse / total variance``), ``l0``/``l1`` of the features, ``l2_norm_in``/``l2_norm_out``."""
    x = torch.cat([a[~torch.isin(t, special)] for a, t in zip(activations, tokens, strict=True)]).double()
    features, x_hat = sae_reconstruction(sae, x.to(sae.W_enc.dtype))
    features, x_hat = features.double(), x_hat.double()
    mse = (x - x_hat).pow(2).sum(-1).mean()
    total_variance = x.pow(2).sum(-1).mean() - x.mean(0).pow(2).sum()
    return {
        "mse": mse.item(),
        "explained_variance": (1 - mse / total_variance).item(),
        "l0": (features != 0).sum(-1).double().mean().item(),
        "l1": features.abs().sum(-1).mean().item(),
        "l2_norm_in": x.norm(dim=-1).mean().item(),
        "l2_norm_out": x_hat.norm(dim=-1).mean().item(),
    }
