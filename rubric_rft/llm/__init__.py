"""Asking models: one chat client (cache, retries, replicas, concurrency, costs) and what it counts."""
