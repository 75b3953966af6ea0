"""The `clean` step: raw HTML, Markdown or text -> normalised main text plus page metadata.

The text it returns is final for character offsets: later steps (entities) index into it, so
every transformation that moves characters happens here and nowhere after.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from tasks.base import ConfigError, DocumentStep, StepOptions
from tasks.boilerplate import RuleSet, apply_line_rules, drop_repeated_lines, extract_metadata, load_rules
from tasks.document import Document
from tasks.html_text import html_to_text

# Line and page separators become newlines; other control characters and zero-width marks go.
LINE_BREAKS = str.maketrans(
    {"\r": "\n", "\v": "\n", "\f": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"}
)
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]")
HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
MANY_NEWLINES = re.compile(r"\n{3,}")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class CleanOptions(StepOptions):
    """Options of the clean step ([steps.clean] in the pipeline config)."""

    rules: str = Field(
        "boilerplate.toml",
        description="Boilerplate rules file (TOML), relative to the pipeline config's folder.",
    )
    repeated_line_min_count: int = Field(
        3, ge=0,
        description="Drop every copy of a line that occurs at least this often in one document (0 = off).",
    )
    repeated_line_min_chars: int = Field(
        12, ge=1, description="Lines shorter than this are never treated as repeated boilerplate.",
    )
    link_density_max: float = Field(
        0.5, ge=0.0, le=1.0,
        description="HTML: drop a paragraph or list whose link text exceeds this share of its text.",
    )

    @field_validator("repeated_line_min_count")
    @classmethod
    def _off_or_at_least_two(cls, value: int) -> int:
        """1 would call every line repeated; say so instead of silently emptying documents."""
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2")
        return value


class Cleaner(DocumentStep):
    """Extract main text, normalise it, pull leading metadata and remove boilerplate by rules."""

    name: ClassVar[str] = "clean"
    version: ClassVar[str] = "1"
    Options: ClassVar[type[StepOptions]] = CleanOptions
    options: CleanOptions

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        super().__init__(options, config_dir)
        self._rules: RuleSet | None = None

    @property
    def rules_path(self) -> Path:
        """The rules file, resolved against the folder of the pipeline config."""
        return self.config_dir / self.options.rules

    def setup(self) -> None:
        """Load and compile the rules once per worker; a bad file fails before any work starts."""
        self._rules = load_rules(self.rules_path)

    def fingerprint_extra(self) -> dict[str, Any]:
        """The rules file's digest: editing a rule must invalidate cached results."""
        try:
            data = self.rules_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.rules_path}: cannot read boilerplate rules: {exc}") from None
        return {"rules_sha256": hashlib.sha256(data).hexdigest()}

    def process(self, docs: list[Document]) -> list[Document]:
        """Clean each accepted document; others pass through unchanged."""
        if self._rules is None:
            self.setup()
        return [self._clean(doc) if self.accepts(doc) else doc for doc in docs]

    def _clean(self, doc: Document) -> Document:
        assert self._rules is not None
        options = self.options
        fmt = doc.meta.get("format", "text")
        page_meta: dict[str, str] = {}
        text = doc.text
        if fmt == "html":
            try:
                page = html_to_text(text, options.link_density_max)
            except Exception as exc:  # noqa: BLE001 - one hostile page must not take down its shard
                return self.stamp(doc.reject(f"html extraction failed: {type(exc).__name__}: {exc}"[:300]))
            text, page_meta = page.text, page.meta
        elif fmt == "markdown":
            text, page_meta = strip_markdown(text)
        text = normalize_text(text)
        text, leading = extract_metadata(text, self._rules)
        text = normalize_text(apply_line_rules(text, self._rules))
        text = drop_repeated_lines(text, options.repeated_line_min_count, options.repeated_line_min_chars)
        text = normalize_text(text)
        # Page metadata only fills gaps; a metadata line in the text itself is the most explicit source.
        meta = {**page_meta, **doc.meta, **leading}
        if not text:
            return self.stamp(doc.reject("empty after cleaning"), text="", meta=meta)
        return self.stamp(doc, text=text, meta=meta)


def normalize_text(text: str) -> str:
    """NFC, no control characters, single spaces, stripped lines, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").translate(LINE_BREAKS)
    text = CONTROL.sub("", unicodedata.normalize("NFC", text))
    text = HORIZONTAL_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return MANY_NEWLINES.sub("\n\n", text).strip("\n")


MD_FENCE = re.compile(r"^[ \t]*(```|~~~).*$", re.MULTILINE)
MD_FRONT_MATTER = re.compile(r"\A---\n.*?\n(?:---|\.\.\.)\n", re.DOTALL)
MD_FRONT_FIELD = re.compile(r"^(title|date):[ \t]*(\S.*?)[ \t]*$", re.MULTILINE | re.IGNORECASE)
MD_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
MD_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]")
MD_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
MD_REF_DEF = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:[ \t]+\S+.*$", re.MULTILINE)
MD_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
MD_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
MD_SETEXT_OR_RULE = re.compile(r"^[ \t]{0,3}(?:[=\-*_][ \t]*){3,}$", re.MULTILINE)
MD_QUOTE = re.compile(r"^[ \t]{0,3}(?:>[ \t]?)+", re.MULTILINE)
MD_LIST = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+", re.MULTILINE)
MD_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$", re.MULTILINE)
MD_TABLE_PIPE = re.compile(r"\s*\|\s*")
MD_EMPHASIS = (
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"),
    re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
)
MD_CODE = re.compile(r"`+([^`]*)`+")


def strip_markdown(text: str) -> tuple[str, dict[str, str]]:
    """Markdown -> plain text and front-matter title/date: markup goes, the words (link text too) stay."""
    text = text.replace("\r\n", "\n")
    meta: dict[str, str] = {}
    front = MD_FRONT_MATTER.match(text)
    if front:
        for key, value in MD_FRONT_FIELD.findall(front.group(0)):
            value = value.strip("'\"")
            if key.lower() == "date":
                iso = ISO_DATE.match(value)
                value = iso.group(0) if iso else ""
            if value:
                meta.setdefault(key.lower(), value)
        text = text[front.end():]
    text = MD_HTML_COMMENT.sub("", text)
    text = MD_BR.sub("\n", text)
    text = MD_FENCE.sub("", text)
    text = MD_REF_DEF.sub("", text)
    text = MD_IMAGE.sub("", text)
    text = MD_LINK.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = MD_AUTOLINK.sub(r"\1", text)
    text = MD_HTML_TAG.sub("", text)
    text = MD_TABLE_RULE.sub("", text)
    text = MD_HEADING.sub(r"\1", text)
    text = MD_SETEXT_OR_RULE.sub("", text)
    text = MD_QUOTE.sub("", text)
    text = MD_LIST.sub("", text)
    text = "\n".join(MD_TABLE_PIPE.sub(" ", line).strip() if "|" in line else line for line in text.split("\n"))
    for pattern in MD_EMPHASIS:
        text = pattern.sub(lambda m: m.group(m.lastindex or 0), text)
    return MD_CODE.sub(r"\1", text), meta
