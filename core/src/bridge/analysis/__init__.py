"""The analysis layer: what interpretability code does with a hooked model, one concern per module.

``model_weights`` (``W_Q``… stacked over layers, ``OV``/``QK``), ``processing`` (fold LN, centring; with
``norm_readers`` and ``value_biases``), ``cache_analysis`` (logit lens, residual decompositions, head and neuron
results; with ``residual``), ``generation`` (``generate`` with hooks), ``saes`` (SAE splicing), ``patching``
(TransformerLens's activation-patching sweeps, batched by ``patch_runs``), ``attribution`` (AtP, AtP*, integrated
gradients) and ``edges`` (EAP, EAP-IG, circuits and their faithfulness). Written against
``protocol.HookedModelLike``, never against ``bridge.Bridge``, which assembles them at the top.
"""
