"""Half-precision numerics: a hooked computation must give what HF computes in that dtype."""

from __future__ import annotations

import copy
from typing import Any

import torch

import bridge
from bridge.testing.examples import AdapterLike, adapter_of, examples_of
from bridge.testing.fixtures import TINY_VOCAB
from bridge.testing.plain_models import bare_output, return_type_of, tiny_hf_model


def check_hooked_norms_match_hf(
    adapter: AdapterLike, architecture: str | None = None, dtype: torch.dtype = torch.bfloat16
) -> None:
    """With every norm hooked (observers only), the output in ``dtype`` is bit-equal to the bare HF
    model's in ``dtype``: the re-expressed norms keep HF's upcasts and rounding points."""
    hf = tiny_hf_model(adapter, architecture).to(dtype)
    reference = copy.deepcopy(hf)
    example = examples_of(adapter).example_input(hf.config, 3, 0)  # models that do not read tokens alone
    if example is None:
        tokens: Any = torch.randint(1, TINY_VOCAB, (3, 16), generator=torch.Generator().manual_seed(0))
    else:
        tokens = {k: v.to(dtype) if v.is_floating_point() else v for k, v in example.inputs.items()}
    model = bridge.wrap(hf, adapter=adapter_of(adapter))
    norm_hooks = [n for n in model.hook_dict if n.endswith(("hook_scale", "hook_normalized"))]
    assert norm_hooks, f"{adapter_of(adapter).__name__} has no norm hook points"
    with torch.no_grad():
        out = model.run_with_hooks(
            tokens,
            return_type=return_type_of(model.adapter, model.unembed),
            fwd_hooks=[(name, lambda t, hook: None) for name in norm_hooks],
        )
    model.detach()
    expected = bare_output(reference, tokens, adapter)
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
