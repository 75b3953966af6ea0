"""textmill steps: pure Python, no Prefect. See docs/architecture.md."""
