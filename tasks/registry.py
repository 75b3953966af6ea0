"""Find steps through the `textmill.steps` entry-point group, built-in and third-party alike."""
from __future__ import annotations

import sys
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from textmill.tasks.base import ConfigError, Step
from textmill.tasks.secrets import redact

ENTRY_POINT_GROUP = "textmill.steps"


class Registry(dict[str, type[Step]]):
    """Installed steps by name, plus the plugins that failed to load and why.

    A broken plugin is an error only for a pipeline that uses it, so one bad third-party
    package cannot stop every other pipeline.
    """

    def __init__(self) -> None:
        super().__init__()
        self.broken: dict[str, str] = {}


def load_registry() -> Registry:
    """Return every installed step class by name. Loading is explicit, never an import side
    effect; it happens once per process and module search path, since scanning every installed
    distribution's entry points costs about 0.3 s (the returned registry is shared: read only)."""
    return _load_registry(tuple(sys.path))


@lru_cache(maxsize=4)
def _load_registry(search_path: tuple[str, ...]) -> Registry:
    registry = Registry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - reported when the step is used
            registry.broken[ep.name] = f"{ep.value} failed to load: {type(exc).__name__}: {exc}"
            continue
        if not (isinstance(cls, type) and issubclass(cls, Step)):
            registry.broken[ep.name] = f"{ep.value} is not a textmill Step class"
        elif cls.name != ep.name:
            registry.broken[ep.name] = f"{ep.value} is a step named {cls.name!r}; the names must match"
        else:
            registry[ep.name] = cls
    return registry


def build_step(name: str, raw_options: dict[str, Any], registry: Registry, config_dir: Path) -> Step:
    """Instantiate step `name` with validated options, or raise a ConfigError naming the choices."""
    if name in registry.broken:
        raise ConfigError(f"step {name!r} is installed but unusable: {registry.broken[name]}")
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise ConfigError(f"unknown step {name!r}; installed steps: {known}")
    cls = registry[name]
    try:
        options = cls.Options.model_validate(raw_options)
    except ValidationError as exc:
        raise ConfigError(f"[steps.{name}] {describe_validation_error(exc, cls)}") from None
    return cls(options, config_dir=config_dir)


def describe_validation_error(exc: ValidationError, cls: type[Step]) -> str:
    """One line per problem, each naming the valid choices."""
    fields = cls.Options.model_fields
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown option {loc!r}; valid options: {', '.join(fields) or 'none'}")
        elif any(word in loc for word in ("dsn", "password", "secret")):
            lines.append(f"option {loc!r}: {err['msg']}")  # never echo what may hold a credential
        else:
            lines.append(f"option {loc!r}: {err['msg']} (got {redact(repr(err.get('input')))})")
    return "; ".join(lines)


def describe_options(cls: type[Step]) -> list[tuple[str, str, str, str]]:
    """`(option, type, default, description)` rows for `textmill steps`."""
    rows = []
    for fname, info in cls.Options.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation)
        rows.append((fname, annotation.replace("typing.", ""), repr(info.default), info.description or ""))
    return rows
