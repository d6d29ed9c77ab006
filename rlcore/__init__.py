"""rlcore: everything in Reward Studio that computes.

Rubrics, hybrid rewards, LM judges, routing, agreement statistics, reward-model and GRPO
training. Imports neither Django nor Celery, and runs alone from ``python -m rlcore``.
"""

__version__ = "0.1.0"
