"""The conformance kit on each vision-language model, both attention paths, fp32: logits equal HF's (no hooks,
every hook cached), the language model's hooks equal HF's ``hidden_states``/eager ``attentions`` and the image
tower's equal those of HF's own image tower run on the pixel values, head ablation (language model) equals weight
surgery, backward hooks equal autograd, the loss with padding equals HF's, every hook matters, no dead hooks,
no leaks, shapes (per part)."""

import pytest

from bridge.testing import ALL_CHECKS
from bridge_vision.examples import VLM_CASES

#: Every check on every case, on the attention paths the check is worth running on (``check.paths``).
CASES = [
    pytest.param(case, check, path, id=f"{case}-{path}-{check.__name__}")
    for case in VLM_CASES
    for check in ALL_CHECKS
    for path in ("native", "hooked")
    if path in check.paths
]


@pytest.mark.parametrize(("case", "check", "path"), CASES)
def test_vlm_conformance(vlm_pair, case, check, path):
    check(vlm_pair(case, path))
