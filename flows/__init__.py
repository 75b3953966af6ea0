"""textmill orchestration: the Prefect flow, shard tasks, caching, CLI and reports."""
