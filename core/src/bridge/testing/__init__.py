"""The conformance kit: tiny offline models and the checks every adapter must pass.

    from bridge.testing import ALL_CHECKS, make_pair
    for check in ALL_CHECKS:
        check(make_pair(MyAdapter, path="hooked"))

or, in a family's test module, ``test_conformance = conformance_test(ADAPTERS)``. Each check is also
exported by name. It is also a pytest plugin: ``pytest --bridge-conformance`` checks every installed adapter.
"""

from bridge.testing.algebra import check_attention_algebra, check_projections
from bridge.testing.checks import (
    ALL_CHECKS,
    LN_FINAL,
    check_gradients,
    check_head_ablation,
    check_hooks_match_hf,
    check_logits_match,
    check_loss_masking,
    check_misspelt_names,
    check_no_dead_hooks,
    check_no_leaks,
    check_norms_match_hf,
    check_residual_algebra,
    run_conformance,
)
from bridge.testing.compare import (
    TOLERANCE,
    CheckNotRun,
    ConformanceError,
    NotApplicable,
    conformance_check,
    expect_close,
    not_applicable,
    rounding_bound,
)
from bridge.testing.configuration import check_config
from bridge.testing.contract import check_implied_hooks, check_shapes, shape_contract
from bridge.testing.examples import AdapterLike, adapter_of, examples_of
from bridge.testing.fixtures import (
    TINY_VOCAB,
    build_tiny_model,
    populate_hub_cache,
    run_isolated,
    save_tiny_model,
    sensitize,
    tiny_tokenizer,
)
from bridge.testing.lifecycle import check_lifecycle, check_ownership
from bridge.testing.numerics import check_hooked_norms_match_hf
from bridge.testing.pair import AttnPath, Pair, make_pair
from bridge.testing.parametrize import (
    ConformanceModel,
    conformance_models,
    conformance_params,
    conformance_test,
    lifecycle_tests,
)
from bridge.testing.plain_models import is_plain
from bridge.testing.profiles import load_hypothesis_profile, property_settings, register_hypothesis_profiles
from bridge.testing.properties import (
    check_any_shape,
    check_hook_subset,
    check_hook_subsets,
    check_input_shapes,
    check_left_padded_batches,
    check_left_padding,
)
from bridge.testing.recurrent import (
    HYBRID_CHECKS,
    check_layer_kinds,
    check_recurrent_states,
    check_state_hooks_each_step,
    check_state_patching,
    recurrent_layers,
)
from bridge.testing.sensitivity import SENSITIVITY, check_every_hook_matters
from bridge.testing.training import check_train_mode

__all__ = [
    "ALL_CHECKS",
    "HYBRID_CHECKS",
    "LN_FINAL",
    "SENSITIVITY",
    "TINY_VOCAB",
    "TOLERANCE",
    "AdapterLike",
    "AttnPath",
    "CheckNotRun",
    "ConformanceError",
    "ConformanceModel",
    "NotApplicable",
    "Pair",
    "adapter_of",
    "build_tiny_model",
    "check_any_shape",
    "check_attention_algebra",
    "check_config",
    "check_every_hook_matters",
    "check_gradients",
    "check_head_ablation",
    "check_hook_subset",
    "check_hook_subsets",
    "check_hooked_norms_match_hf",
    "check_hooks_match_hf",
    "check_implied_hooks",
    "check_input_shapes",
    "check_layer_kinds",
    "check_left_padded_batches",
    "check_left_padding",
    "check_lifecycle",
    "check_logits_match",
    "check_loss_masking",
    "check_misspelt_names",
    "check_no_dead_hooks",
    "check_no_leaks",
    "check_norms_match_hf",
    "check_ownership",
    "check_projections",
    "check_recurrent_states",
    "check_residual_algebra",
    "check_shapes",
    "check_state_hooks_each_step",
    "check_state_patching",
    "check_train_mode",
    "conformance_check",
    "conformance_models",
    "conformance_params",
    "conformance_test",
    "examples_of",
    "expect_close",
    "is_plain",
    "lifecycle_tests",
    "load_hypothesis_profile",
    "make_pair",
    "not_applicable",
    "populate_hub_cache",
    "property_settings",
    "recurrent_layers",
    "register_hypothesis_profiles",
    "rounding_bound",
    "run_conformance",
    "run_isolated",
    "save_tiny_model",
    "sensitize",
    "shape_contract",
    "tiny_tokenizer",
]
