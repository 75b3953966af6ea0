"""The installed distribution: one top-level package, `textmill`, and nothing that collides."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_installs_only_the_textmill_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("textmill-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"textmill", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "textmill/tasks/base.py" in names
    assert "textmill/flows/cli.py" in names
    assert "textmill/config/pipeline.toml" in names
    assert "textmill/config/boilerplate.toml" in names
    assert "textmill/flows/terminal_logging.yml" in names
    assert "textmill/tasks/migrations/0001_initial.sql" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "textmill = textmill.flows.cli:app" in text
    assert "clean = textmill.tasks.clean:Cleaner" in text
