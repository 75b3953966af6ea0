"""Docs that must stay true to the code."""
from __future__ import annotations

import re


from conftest import REPO, shared_path
from textmill.tasks.registry import load_registry


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) >= 2
    assert commands[1] in (REPO / ".ci" / "run").read_text()


def test_every_builtin_step_is_documented() -> None:
    architecture = (REPO / "docs" / "architecture.md").read_text()
    builtin = [name for name, cls in load_registry().items() if cls.__module__.startswith("textmill.tasks.")]
    assert builtin
    for name in builtin:
        assert f"\n### {name}\n" in architecture, f"docs/architecture.md has no '### {name}' section"


def test_seeds_match_the_shared_sample_documents() -> None:
    shared = shared_path("seeds")
    for path in shared.iterdir():
        assert (REPO / "seeds" / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (REPO / "seeds").iterdir()) == sorted(p.name for p in shared.iterdir())
