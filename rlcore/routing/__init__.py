"""Route each comparison to a human or to an LM judge (Hybrid Preferences, Miranda et al. 2024).

- :mod:`rlcore.routing.features` — per-comparison features, binned into named boolean features.
- :mod:`rlcore.routing.predictor` — the performance-prediction model, selection strategies and
  the :class:`~rlcore.routing.predictor.RoutingPlan` they produce.
- :mod:`rlcore.routing.cli` — ``python -m rlcore routing ...``.

Heavy imports (torch, transformers) happen inside the embedding function only.
"""
