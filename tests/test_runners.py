"""Task-runner choices that need no server: step tags."""
from __future__ import annotations

import pytest

from textmill.flows import runners
from textmill.tasks.base import ConfigError


@pytest.mark.parametrize(
    ("setting", "watched", "expected"),
    [("on", False, True), ("off", True, False), ("auto", True, True), ("auto", False, False), (None, True, True), ("OFF", True, False)],
)
def test_step_tags_follow_the_setting(monkeypatch: pytest.MonkeyPatch, setting: str | None, watched: bool, expected: bool) -> None:
    if setting is None:
        monkeypatch.delenv(runners.STEP_TAGS_ENV, raising=False)
    else:
        monkeypatch.setenv(runners.STEP_TAGS_ENV, setting)
    monkeypatch.setattr(runners, "watched_server", lambda: watched)
    assert runners.tag_steps() is expected


def test_an_unknown_step_tags_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runners.STEP_TAGS_ENV, "sometimes")
    with pytest.raises(ConfigError, match="TEXTMILL_STEP_TAGS='sometimes'"):
        runners.tag_steps()
