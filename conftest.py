"""Session-wide test settings for every distribution's tests."""

import torch

from bridge.testing import load_hypothesis_profile

# The tests run tiny models: intra-op threads only add synchronisation, which on a shared 2-core
# machine made a tiny backward pass about 100x slower than on one thread. Benchmarks are separate.
torch.set_num_threads(1)

# Hypothesis replays: derandomized by default (HYPOTHESIS_PROFILE=bridge-ci), so a red run fails the same way again;
# HYPOTHESIS_PROFILE=bridge-deep BRIDGE_PROPERTY_EXAMPLES=400 explores further (not in CI).
load_hypothesis_profile()
