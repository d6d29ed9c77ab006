"""Reward-model and GRPO training on Hugging Face TRL, driven by a spec file.

- ``specs``: ``RewardModelTrainSpec`` and ``GRPOTrainSpec``, the contracts the webapp stores and the CLI reads.
- ``snapshot``: reads and checks frozen data snapshots (JSONL / Parquet), naming the file and line of a bad row.
- ``presets``: GRPO loss variants (grpo, dr_grpo, dapo, gspo) as TRL ``GRPOConfig`` settings.
- ``calibration``: held-out accuracy, margin, ECE and Brier of Bradley-Terry rewards; ensembles.
- ``reward_model`` / ``grpo``: the runs themselves (TRL ``RewardTrainer`` / ``GRPOTrainer``).
- ``reporting``: the TrainerCallback that turns TRL logs into ``rlcore.events`` lines and ``metrics.jsonl``.
- ``cli``: ``python -m rlcore train reward-model SPEC`` and ``python -m rlcore train grpo SPEC``.

Only ``specs``, ``snapshot``, ``presets`` and ``calibration`` are importable without torch.
"""
