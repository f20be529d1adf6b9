"""The conformance kit on each vision-language model (LLaVA with three language families, Gemma 3, LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL), both attention paths, fp32: logits equal HF's (no hooks,
every hook cached), the language model's hooks equal HF's ``hidden_states``/eager ``attentions`` and the image
tower's equal those of HF's own image tower run on the pixel values, head ablation (language model) equals weight
surgery, backward hooks equal autograd, the loss with padding equals HF's, every hook matters, no dead hooks,
no leaks, shapes (per part)."""

import pytest

from bridge.testing import ALL_CHECKS
from bridge_vision.vlm_examples import ANYRES_CASES, QWEN_CASES, VLM_CASES


@pytest.mark.parametrize("path", ["native", "hooked"])
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", [*VLM_CASES, *ANYRES_CASES, *QWEN_CASES])
def test_vlm_conformance(vlm_pair, case, check, path):
    check(vlm_pair(case, path))
