"""What a document and a corpus know about a name that one sentence does not.

A statistical NER model labels each mention from its sentence alone, so one article can call
"Lebed" a person in one line and an organisation in the next, tag "Simmons" after "Phil
Simmons" only sometimes, and miss a name in an all-capitals headline that it tagged in the
body. These functions correct the model's spans with evidence from outside the sentence:

- `strip_article`: a leading "the" is not part of a name ("the United States").
- `Gazetteer`: names the user fixes, with their labels, in a TOML file in `config/`.
- `consistent_spans`: within one document, every mention of a name gets the name's majority
  label; capitalised mentions the model missed are tagged; the last word of a multi-word person
  name is that person too.
- `label_key`: the form under which the corpus counts a name's labels over documents; the
  entities step's index gives each name its majority label (`tasks/entities.py`).
"""
from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from textmill.tasks.base import ConfigError
from textmill.tasks.canonical import PERSON, normalise

ARTICLE = re.compile(r"(?i)the\s+")
Span = list[Any]  # [start, end, label, text]


def strip_article(span: Span) -> Span:
    """The span without a leading "the " (kept when nothing else would remain)."""
    start, end, label, text = span
    match = ARTICLE.match(text)
    if match is None or match.end() >= len(text):
        return span
    return [start + match.end(), end, label, text[match.end() :]]


def label_key(text: str) -> str:
    """A name's case-folded form without possessive, edge punctuation or leading "the"."""
    return normalise(text, "")


def overlaps(start: int, end: int, taken: list[tuple[int, int]]) -> bool:
    return any(start < t_end and t_start < end for t_start, t_end in taken)


def name_pattern(names: list[str], ignore_case: bool) -> re.Pattern[str]:
    """One pattern matching any of `names` as whole words, the longest name first."""
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=lambda n: (-len(n), n)))
    return re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)", re.IGNORECASE if ignore_case else 0)


def consistent_spans(text: str, spans: list[Span], fixed: dict[str, str] | None = None) -> list[Span]:
    """One label per name in this document, and the mentions the model missed (see the module
    docstring). `fixed` maps label keys to the labels the user gave them. Sorted by offset."""
    fixed = fixed or {}
    if not spans:
        return spans
    votes: dict[str, Counter[str]] = {}
    for _, _, label, name in spans:
        votes.setdefault(label_key(name), Counter())[label] += 1
    labels = {key: max(sorted(counts), key=counts.__getitem__) for key, counts in votes.items() if key}
    labels.update({key: label for key, label in fixed.items() if key in labels})
    for _, _, label, name in spans:
        words = name.split()
        if label == PERSON and len(words) > 1 and len(words[-1]) > 2 and words[-1][0].isupper():
            surname = label_key(words[-1])
            if surname and surname not in fixed:
                labels[surname] = PERSON
    out = [[start, end, labels.get(label_key(name), label), name] for start, end, label, name in spans]
    taken = [(start, end) for start, end, _, _ in out]
    names = sorted({key for key in labels if len(key) > 1})
    if names:
        for match in name_pattern(names, ignore_case=True).finditer(text):
            start, end = match.span()
            if not text[start].isupper() or overlaps(start, end, taken):
                continue
            label = labels.get(label_key(match.group()))
            if label is not None:
                out.append([start, end, label, match.group()])
                taken.append((start, end))
    return sorted(out, key=lambda span: (span[0], span[1]))


@dataclass(frozen=True)
class Gazetteer:
    """Names with the labels the user wants, matched case-sensitively as whole words; a match
    replaces any span of the model's it overlaps."""

    names: tuple[tuple[str, str], ...]

    @classmethod
    def load(cls, path: Path) -> Gazetteer:
        """`[[name]]` tables with `text` and `label`; ConfigError naming the problem otherwise."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read gazetteer {path}: {exc}") from None
        entries = data.get("name", [])
        if not isinstance(entries, list):
            raise ConfigError(f"gazetteer {path}: 'name' must be an array of tables ([[name]])")
        names = []
        for i, entry in enumerate(entries, 1):
            text = entry.get("text") if isinstance(entry, dict) else None
            label = entry.get("label") if isinstance(entry, dict) else None
            if not isinstance(text, str) or not text.strip() or not isinstance(label, str) or not label.strip():
                raise ConfigError(f"gazetteer {path}: name {i} needs a non-empty 'text' and 'label'")
            names.append((" ".join(text.split()), label.strip()))
        return cls(tuple(sorted(set(names))))

    @cached_property
    def labels(self) -> dict[str, str]:
        """Label key -> the label the user gave the name."""
        return {label_key(text): label for text, label in self.names}

    @cached_property
    def _by_text(self) -> dict[str, str]:
        return dict(self.names)

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return name_pattern(list(self._by_text), ignore_case=False)

    def apply(self, text: str, spans: list[Span]) -> list[Span]:
        """`spans` with every gazetteer match in `text` added and the model's spans it overlaps
        dropped; a match inside a longer span of the model's ("Surrey" in "Surrey County
        Council") is another name and left alone."""
        if not self.names:
            return spans
        found = [
            [m.start(), m.end(), self._by_text[m.group()], m.group()]
            for m in self._pattern.finditer(text)
            if not any(s <= m.start() and m.end() <= e and e - s > m.end() - m.start() for s, e, _, _ in spans)
        ]
        if not found:
            return spans
        taken = [(start, end) for start, end, _, _ in found]
        kept = [span for span in spans if not overlaps(span[0], span[1], taken)]
        return sorted(kept + found, key=lambda span: (span[0], span[1]))
