"""Training, evaluation and baselines for seg2med (issue 3).

* :mod:`.dataset` — find cases (folder or CSV), prepare and cache model-space slices.
* :mod:`.train` — the DDPM / AttentionUnet training loop (checkpoints, resume, DDP, logs).
* :mod:`.evaluate` — per-case metrics, Table II summary, Fig. 4 plots, Mann–Whitney comparison.
* :mod:`.baselines` — the prior-only and AttentionUnet baselines.
* :mod:`.cli` — ``seg2med train`` and ``seg2med evaluate``.
"""
