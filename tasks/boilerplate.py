"""Boilerplate rules: load a TOML rule file once, then apply it to normalised text.

Rules live in a file, not in code, so that a new site's furniture is a config edit (which changes
the clean step's fingerprint) rather than a release. See `config/boilerplate.toml` for the format.
"""
from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textmill.tasks.base import ConfigError

RULE_KINDS = ("metadata", "cut_from", "drop_line", "strip")
RULE_KEYS = {"name", "pattern", "description"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule; `name` is what error messages and docs refer to."""

    kind: str
    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """All rules of one file, grouped by kind and kept in file order."""

    metadata: tuple[Rule, ...] = ()
    cut_from: tuple[Rule, ...] = ()
    drop_line: tuple[Rule, ...] = ()
    strip: tuple[Rule, ...] = ()


def load_rules(path: Path) -> RuleSet:
    """Read and compile a rule file; any mistake is a ConfigError naming the file and the rule."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: boilerplate rules file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read boilerplate rules: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(data) - set(RULE_KINDS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown rule kind(s) {', '.join(sorted(unknown))}; valid kinds: {', '.join(RULE_KINDS)}"
        )
    groups = {kind: tuple(_compile(path, kind, i, raw) for i, raw in enumerate(_as_list(path, kind, data)))
              for kind in RULE_KINDS}
    return RuleSet(**groups)


def _as_list(path: Path, kind: str, data: dict[str, Any]) -> list[Any]:
    entries = data.get(kind, [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: '{kind}' must be an array of tables ([[{kind}]])")
    return entries


def _compile(path: Path, kind: str, index: int, raw: Any) -> Rule:
    where = f"{path}: [[{kind}]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table with 'name' and 'pattern'")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: missing or empty 'name'")
    where = f"{path}: [[{kind}]] rule {name!r}"
    extra = set(raw) - RULE_KEYS
    if extra:
        valid = ", ".join(sorted(RULE_KEYS))
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; valid keys: {valid}")
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: missing or empty 'pattern'")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regex {pattern!r}: {exc}") from None
    if kind == "metadata" and not compiled.groupindex:
        raise ConfigError(f"{where}: a metadata pattern needs at least one named group, e.g. (?P<date>...)")
    if compiled.match("") is not None and kind != "strip":
        raise ConfigError(f"{where}: pattern {pattern!r} matches the empty string, so it would match every line")
    return Rule(kind=kind, name=name, pattern=compiled)


def extract_metadata(text: str, rules: RuleSet) -> tuple[str, dict[str, str]]:
    """Apply `metadata` rules at the start of `text`; return the rest and the named groups found."""
    found: dict[str, str] = {}
    for rule in rules.metadata:
        match = rule.pattern.match(text)
        if match is None:
            continue
        found.update({k: v.strip() for k, v in match.groupdict().items() if v and v.strip()})
        text = text[match.end():].lstrip(" ")
    return text, found


def apply_line_rules(text: str, rules: RuleSet) -> str:
    """Apply `cut_from`, then `drop_line`, then `strip`, line by line so paragraphs survive."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if any(rule.pattern.search(line) for rule in rules.cut_from):
            lines = lines[:i]
            break
    kept = []
    for line in lines:
        if any(rule.pattern.search(line) for rule in rules.drop_line):
            continue
        for rule in rules.strip:
            line = rule.pattern.sub("", line)
        kept.append(line)
    return "\n".join(kept)


@dataclass(frozen=True, slots=True)
class Repetition:
    """A text without the later copies of its repeated lines, and the share of characters they held."""

    text: str
    share: float


def drop_repeated_lines(text: str, min_count: int, min_chars: int) -> Repetition:
    """Keep the first copy of each line seen `min_count`+ times and drop the later copies.

    Repeated lines are usually page furniture ("Photo: AP" under every picture), but refrains, logs
    and tables repeat lines too: keeping the first copy keeps their content once. `share` (later
    copies' characters over all line characters, newlines not counted) lets the caller refuse a
    document that is mostly repetition instead of quietly cutting most of it away.
    """
    if min_count < 2:
        return Repetition(text, 0.0)
    lines = text.split("\n")
    counts = Counter(line for line in lines if len(line) >= min_chars)
    repeated = {line for line, n in counts.items() if n >= min_count}
    if not repeated:
        return Repetition(text, 0.0)
    seen: set[str] = set()
    kept: list[str] = []
    removed = 0
    for line in lines:
        if line in repeated:
            if line in seen:
                removed += len(line)
                continue
            seen.add(line)
        kept.append(line)
    return Repetition("\n".join(kept), removed / sum(len(line) for line in lines))
