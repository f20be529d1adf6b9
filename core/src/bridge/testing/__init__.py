"""The conformance kit: tiny offline models and the checks every adapter must pass.

    from bridge.testing import ALL_CHECKS, make_pair
    for check in ALL_CHECKS:
        check(make_pair(MyAdapter, path="hooked"))

It is also a pytest plugin: ``pytest --bridge-conformance`` checks every installed adapter.
"""

from bridge.testing.checks import ALL_CHECKS, TOLERANCE, Pair, make_pair, run_conformance
from bridge.testing.fixtures import (
    TINY_VOCAB,
    build_tiny_model,
    populate_hub_cache,
    run_isolated,
    save_tiny_model,
    tiny_tokenizer,
)
from bridge.testing.lifecycle import check_lifecycle, check_ownership, is_plain
from bridge.testing.numerics import check_hooked_norms_match_hf
from bridge.testing.properties import check_any_shape, check_hook_subset, check_left_padding

__all__ = [
    "ALL_CHECKS",
    "TINY_VOCAB",
    "TOLERANCE",
    "Pair",
    "build_tiny_model",
    "check_any_shape",
    "check_hook_subset",
    "check_hooked_norms_match_hf",
    "check_left_padding",
    "check_lifecycle",
    "check_ownership",
    "is_plain",
    "make_pair",
    "populate_hub_cache",
    "run_conformance",
    "run_isolated",
    "save_tiny_model",
    "tiny_tokenizer",
]
