"""The conformance kit on every bridge-vision architecture, on both attention paths, fp32: outputs equal HF's
(no hooks, everything cached), ``hook_resid_post``/``hook_pattern`` equal HF's ``hidden_states``/eager
``attentions`` (per tower for two-tower models), head ablation at ``hook_z`` equals weight surgery on the
vision tower's output projection, backward hooks equal autograd, no dead hooks, no leaks, shapes. The examples'
``conformance_configs`` (DINOv2's SwiGLU MLP) carry the ``variants`` mark."""

from bridge.testing import conformance_test
from bridge_vision import ADAPTERS

test_conformance = conformance_test(ADAPTERS)
