"""The calls TransformerLens's demos and SAELens's tutorials make, each with the compat test that checks it.

Main Demo, Exploratory Analysis, Activation Patching and Head Detector (current and 2024 versions) and SAELens's
Hooked SAE Transformer, loading-and-analysing and training tutorials. ``tools/tutorial_surface.py NOTEBOOK...``
measures a notebook against this table; ``compat/test_tutorial_surface.py`` checks every test named here exists.
"""

#: Load cells: translated, not run unchanged (docs/transformerlens.md).
LOAD_CALLS = {"model.from_pretrained", "model.boot_transformers"}

_A = "compat/test_tl_analysis.py"
_C = "compat/test_tl_cache_analysis.py"
_P = "compat/test_tl_patching.py"
_S = "compat/test_tl_surface.py"
_R = "compat/test_tl_processed.py"
_H = "compat_sae/test_hooked_transformer.py"
_T = "compat_sae/test_training.py"
_Z = "compat_sae/test_hook_z.py"

#: API name -> "file::test" checking it against TransformerLens 4.3, HookedTransformer or SAELens.
SURFACE = {
    "model.cfg": f"{_S}::test_all_head_labels_match",
    "model.to_tokens": f"{_S}::test_default_prepend_bos_false_matches_transformer_lens_tokens",
    "model.to_str_tokens": f"{_A}::test_test_prompt_prints_what_transformer_lens_prints",
    "model.to_string": f"{_A}::test_test_prompt_prints_what_transformer_lens_prints",
    "model.to_single_token": f"{_A}::test_test_prompt_prints_what_transformer_lens_prints",
    "model.get_token_position": f"{_A}::test_detect_head",
    "model.run_with_cache": f"{_A}::test_logit_lens_accumulated_resid_with_ln",
    "model.run_with_hooks": f"{_S}::test_get_act_name_in_and_out_patch_the_same_stream",
    "model.loss_fn": f"{_A}::test_evals_induction_loss",
    "model.generate": f"{_A}::test_evals_sanity_check",
    "model.enable_compatibility_mode": f"{_R}::test_processed_models_give_the_same_logits",
    "model.set_use_attn_result": f"{_A}::test_dla_stack_head_results",
    "model.set_use_split_qkv_input": f"{_H}::test_add_sae_acts_to_saes_and_reset",
    "model.tokens_to_residual_directions": f"{_A}::test_tokens_to_residual_directions",
    "model.tl_named_parameters": f"{_S}::test_tl_parameters_match",
    "model.named_parameters": f"{_S}::test_tl_parameters_match",
    "model.OV": f"{_A}::test_composition_scores_of_ov_and_qk",
    "model.W_O": f"{_H}::test_add_sae_acts_to_saes_and_reset",
    "model.embed.W_E": f"{_S}::test_full_ov_circuit_through_the_component_embeddings",
    "model.unembed.W_U": f"{_S}::test_processed_component_parameters_match",
    "model.unembed.b_U": f"{_S}::test_processed_component_parameters_match",
    "model.blocks": f"{_S}::test_component_parameters_match",
    "model.blocks.attn": f"{_S}::test_component_parameters_match",
    "model.W_U": f"{_S}::test_model_wide_views_match",
    "model.hooks": f"{_S}::test_hooks_context_matches",
    "model.blocks.attn.W_Q": f"{_S}::test_component_parameters_match",
    "model.blocks.attn.W_K": f"{_S}::test_component_parameters_match",
    "model.blocks.attn.W_V": f"{_S}::test_component_parameters_match",
    "model.blocks.attn.hook_z": f"{_S}::test_permanent_hook_point_ablation_then_run_with_cache",
    "model.all_head_labels": f"{_S}::test_all_head_labels_match",
    "model.accumulated_bias": f"{_S}::test_accumulated_bias_matches",
    "model.get_caching_hooks": f"{_S}::test_get_caching_hooks_match",
    "model.cache_all": f"{_H}::test_caching_hooks_and_cache_all",
    "model.sample_datapoint": f"{_H}::test_sample_datapoint_on_the_same_dataset",
    "model.load_and_process_state_dict": f"{_H}::test_load_and_process_state_dict",
    "model.tokenizer": f"{_T}::test_train_then_run_evals_matches_hand_computation",
    "model.run_with_saes": f"{_H}::test_run_with_saes_and_its_cache",
    "model.run_with_cache_with_saes": f"{_H}::test_run_with_saes_and_its_cache",
    "model.run_with_hooks_with_saes": f"{_H}::test_feature_ablation_with_run_with_hooks_with_saes",
    "model.add_sae": f"{_H}::test_add_sae_acts_to_saes_and_reset",
    "model.reset_saes": f"{_H}::test_add_sae_acts_to_saes_and_reset",
    "model.acts_to_saes": f"{_H}::test_add_sae_acts_to_saes_and_reset",
    "model.reset_hooks": f"{_H}::test_caching_hooks_and_cache_all",
    "model.add_hook": f"{_H}::test_caching_hooks_and_cache_all",
    "cache[...]": f"{_S}::test_cache_keys_with_tensor_and_numpy_layers",
    "cache.apply_ln_to_stack": f"{_A}::test_dla_apply_ln_to_stack",
    "cache.accumulated_resid": f"{_A}::test_logit_lens_accumulated_resid_with_ln",
    "cache.decompose_resid": f"{_A}::test_dla_decompose_resid",
    "cache.stack_head_results": f"{_A}::test_dla_stack_head_results",
    "cache.logit_attrs": f"{_A}::test_dla_logit_attrs",
    "utils.get_act_name": f"{_S}::test_get_act_name_in_and_out_patch_the_same_stream",
    "utils.test_prompt": f"{_A}::test_test_prompt_prints_what_transformer_lens_prints",
    "utils.to_numpy": f"{_S}::test_get_caching_hooks_match",
    "utils.get_corner": f"{_S}::test_refactored_models_match",
    "utils.get_device": f"{_S}::test_component_parameters_match",
    "utils.data": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "utils.tokenize_and_concatenate": f"{_Z}::test_hook_z_store_and_run_evals_match_hand_computation",
    "patching.get_act_patch_resid_pre": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "patching.get_act_patch_block_every": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "patching.get_act_patch_attn_head_out_by_pos": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "patching.get_act_patch_attn_head_out_all_pos": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "patching.get_act_patch_attn_head_all_pos_every": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "patching.get_act_patch_attn_head_by_pos_every": f"{_P}::test_patching_sweep_matches_transformer_lens",
    "evals.induction_loss": f"{_A}::test_evals_induction_loss",
    "head_detector.detect_head": f"{_A}::test_detect_head",
}
