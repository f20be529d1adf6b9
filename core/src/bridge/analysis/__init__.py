"""The analysis layer: what interpretability code does with a hooked model, one concern per module.

``model_weights`` (``W_Q``… stacked over layers, ``OV``/``QK``), ``processing`` (fold LN, centring; with
``norm_readers`` and ``value_biases``), ``cache_analysis`` (logit lens, residual decompositions, head and neuron
results; with ``residual``), ``generation`` (``generate`` with hooks), ``saes`` (SAE splicing). Written against
``protocol.HookedModelLike``, never against ``bridge.Bridge``, which assembles them at the top.
"""
