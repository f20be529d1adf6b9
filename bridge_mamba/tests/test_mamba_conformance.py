"""The conformance kit on Mamba and Mamba-2, fp32, plus SSM-specific leak and naming cases.

Without attention the kit's "native" and "hooked" paths are the same, so it runs once.
"""

from typing import Any

import pytest
import torch

from bridge.kernel.errors import HookNameError
from bridge.testing import TOLERANCE, conformance_test
from bridge_mamba import SSM_ADAPTERS as ADAPTERS

ARCHITECTURES = [(adapter, arch) for adapter in ADAPTERS for arch in adapter.architectures]

test_conformance = conformance_test(ADAPTERS, paths=("native",))


def _altered_modules(model) -> list[str]:
    return [
        name
        for name, m in model.hf_model.named_modules()
        if "forward" in m.__dict__ or m._forward_hooks or m._forward_pre_hooks
    ]


@pytest.mark.parametrize("boom_at", ["blocks.0.mixer.hook_y", "blocks.0.mixer.hook_ssm_state"])
@pytest.mark.parametrize(("adapter", "arch"), ARCHITECTURES, ids=[a for _, a in ARCHITECTURES])
def test_no_leaks(pair_for, adapter, arch, boom_at):
    """After run_with_hooks, hooks() exit or a hook raising inside the mixer, only the user's hooks remain."""
    pair = pair_for(adapter, arch)
    model, tokens = pair.bridge, pair.tokens()
    assert _altered_modules(model) == []
    model.set_opt_in("hook_ssm_state", True)
    permanent = model.add_hook("blocks.0.hook_resid_pre", lambda t, hook: None, is_permanent=True)
    temporary = model.add_hook("blocks.0.mixer.hook_ssm_out", lambda t, hook: None)
    before = {n: (list(h.fwd_hooks), list(h.bwd_hooks)) for n, h in model.hook_dict.items()}

    def boom(t: torch.Tensor, hook: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, fwd_hooks=[(boom_at, boom)], return_type=None)
    model.run_with_cache(tokens, return_type=None)
    with model.hooks(fwd_hooks=[(lambda n: True, lambda t, hook: None)]):
        model(tokens, return_type=None)
    after = {n: (list(h.fwd_hooks), list(h.bwd_hooks)) for n, h in model.hook_dict.items()}
    assert after == before
    model.reset_hooks()
    assert model.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks == permanent
    assert temporary[0] not in model.hook_dict["blocks.0.mixer.hook_ssm_out"].fwd_hooks
    model.reset_hooks(including_permanent=True)
    model.set_opt_in("hook_ssm_state", False)
    assert _altered_modules(model) == []
    torch.testing.assert_close(pair.output(tokens), pair.reference_output(tokens), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(("adapter", "arch"), ARCHITECTURES, ids=[a for _, a in ARCHITECTURES])
def test_misspelt_names_suggest(pair_for, adapter, arch):
    model = pair_for(adapter, arch).bridge
    for wrong, right in (
        ("blocks.0.mixer.hook_ssm_otu", "blocks.0.mixer.hook_ssm_out"),
        ("blocks.1.hook_resid_psot", "blocks.1.hook_resid_post"),
        ("blocks.0.hook_mixer_ni", "blocks.0.hook_mixer_in"),
    ):
        with pytest.raises(HookNameError, match=right):
            model.add_hook(wrong, lambda t, hook: None)
