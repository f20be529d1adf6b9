"""The conformance kit on each vision-language model (LLaVA with three language families, Gemma 3, LLaVA-NeXT,
LLaVA-OneVision, PaliGemma 1 and 2, Idefics3, SmolVLM, InternVL, Qwen2-VL, Qwen2.5-VL, Qwen3-VL), both attention
paths, fp32: logits equal HF's (no hooks, every hook cached), the language model's hooks equal HF's
``hidden_states``/eager ``attentions`` and the image tower's equal those of HF's own image tower run on the pixel
values, head ablation (language model) equals weight surgery, backward hooks equal autograd, the loss with padding
equals HF's, every hook matters, no dead hooks, no leaks, shapes (per part). The cases built from the examples'
``conformance_configs`` (other language families, PaliGemma 2, InternViT's q/k norms) carry the ``variants``
mark: ``make test-variants`` runs them."""

import pytest

from bridge.testing import ALL_CHECKS
from bridge_vision.vlm_examples import ANYRES_CASES, QWEN_CASES, VARIANT_CASES, VLM_CASES

#: Every check on every case, on the attention paths the check is worth running on (``check.paths``); the
#: real-checkpoint variants carry the ``variants`` mark.
CASES = [
    pytest.param(
        case,
        check,
        path,
        id=f"{case}-{path}-{check.__name__}",
        marks=[pytest.mark.variants] if case in VARIANT_CASES else [],
    )
    for case in [*VLM_CASES, *ANYRES_CASES, *QWEN_CASES]
    for check in ALL_CHECKS
    for path in ("native", "hooked")
    if path in check.paths
]


@pytest.mark.parametrize(("case", "check", "path"), CASES)
def test_vlm_conformance(vlm_pair, case, check, path):
    check(vlm_pair(case, path))
