"""What runs inside a training job (scripts/train_grpo.py): rollout engines, CPU launch settings,
checkpoint-on-signal, metric logging, and the over-optimization monitor.
"""
