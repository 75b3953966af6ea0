"""The `clean` step: raw HTML, Markdown or text -> normalised main text plus page metadata.

The text it returns is final for character offsets: later steps (entities) index into it, so
every transformation that moves characters happens here and nowhere after.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar, Literal

from bs4 import BeautifulSoup, NavigableString, Tag
from markdown_it import MarkdownIt
from pydantic import Field, field_validator

from textmill.tasks.base import ConfigError, DocumentStep, StepOptions
from textmill.tasks.boilerplate import RuleSet, apply_line_rules, drop_repeated_lines, extract_metadata, load_rules
from textmill.tasks.document import Document
from textmill.tasks.html_text import (
    BLOCK_TAGS, MARKUP_FAULTS, NON_TEXT_STRINGS, NON_TEXT_TAGS, first_iso_date, html_to_text,
)
from textmill.tasks.main_text import choose_main_text

# Line and page separators become newlines; other control characters and zero-width marks go.
LINE_BREAKS = str.maketrans(
    {"\r": "\n", "\v": "\n", "\f": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"}
)
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]")
HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
MANY_NEWLINES = re.compile(r"\n{3,}")


class CleanOptions(StepOptions):
    """Options of the clean step ([steps.clean] in the pipeline config)."""

    rules: str | None = Field(
        None,
        description="Boilerplate rules file (TOML); a relative path is resolved against the pipeline config's "
        "folder. None: the boilerplate.toml packaged with textmill.",
    )
    repeated_line_min_count: int = Field(
        3, ge=0,
        description="Keep only the first copy of a line that occurs at least this often in one document (0 = off).",
    )
    repeated_line_min_chars: int = Field(
        12, ge=1, description="Lines shorter than this are never treated as repeated boilerplate.",
    )
    repeated_line_max_share: float = Field(
        0.6, ge=0.0, le=1.0,
        description="Reject a document when the repeated copies would take more than this share of its "
        "characters: it is mostly repetition, not furniture (1 = never reject).",
    )
    link_density_max: float = Field(
        0.5, ge=0.0, le=1.0,
        description="HTML: drop a paragraph or list whose link text exceeds this share of its text.",
    )
    html_extractor: Literal["trafilatura", "textmill"] = Field(
        "trafilatura",
        description="HTML main text: 'trafilatura' (precision mode, no reader comments), checked against "
        "textmill's own extraction and replaced by it when trafilatura keeps too little; 'textmill': "
        "textmill's beautifulsoup4 extraction alone.",
    )
    fallback_share: float = Field(
        0.5, ge=0.0, le=1.0,
        description="With html_extractor 'trafilatura': use textmill's extraction when trafilatura's text has "
        "fewer than this share of its words.",
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
    version: ClassVar[str] = "4"
    libraries: ClassVar[tuple[str, ...]] = ("beautifulsoup4", "lxml", "markdown-it-py", "trafilatura")
    Options: ClassVar[type[StepOptions]] = CleanOptions
    setup_before_fork: ClassVar[bool] = True  # compiled rules only
    options: CleanOptions

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        super().__init__(options, config_dir)
        self._rules: RuleSet | None = None

    @property
    def rules_path(self) -> Path:
        """The configured rules file, resolved against the folder of the pipeline config, so a config
        copied elsewhere finds its own rules; unset, the packaged rules, so it needs none."""
        if self.options.rules is None:
            return Path(str(files("textmill.config") / "boilerplate.toml"))
        return (self.config_dir / self.options.rules).resolve()

    def setup(self) -> None:
        """Load and compile the rules once per worker; a bad file fails before any work starts."""
        self._rules = load_rules(self.rules_path)

    def fingerprint_extra(self) -> dict[str, Any]:
        """The rules file's digest: editing a rule must invalidate cached results."""
        try:
            data = self.rules_path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"[steps.clean] rules: {self.rules_path} not found "
                "(a relative path is resolved against the pipeline config's folder; unset, the packaged rules are used)"
            ) from None
        except OSError as exc:
            raise ConfigError(f"[steps.clean] rules: cannot read {self.rules_path}: {exc.strerror or exc}") from None
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
        if fmt in ("html", "markdown"):
            try:
                if fmt == "html":
                    page = html_to_text(text, options.link_density_max)
                    page_meta = page.meta
                    if options.html_extractor == "trafilatura":
                        text = choose_main_text(page.text, text, options.fallback_share, options.link_density_max)
                    else:
                        text = page.text
                else:
                    text, page_meta = strip_markdown(text)
            except MARKUP_FAULTS as exc:
                return self.stamp(doc.reject(f"{fmt} extraction failed: {type(exc).__name__}: {exc}"[:300]))
        text = normalize_text(text)
        text, leading = extract_metadata(text, self._rules)
        text = normalize_text(apply_line_rules(text, self._rules))
        repetition = drop_repeated_lines(text, options.repeated_line_min_count, options.repeated_line_min_chars)
        # Page metadata only fills gaps; a metadata line in the text itself is the most explicit source.
        meta = {**page_meta, **doc.meta, **leading}
        share = round(repetition.share, 3)  # compared as reported, so a reason never shows "60% (limit 60%)"
        if share > options.repeated_line_max_share:
            reason = (f"repetitive: {percent(share)} of characters are repeated lines "
                      f"(limit {percent(options.repeated_line_max_share)})")
            return self.stamp(doc.reject(reason), text=text, meta=meta)
        text = normalize_text(repetition.text)
        if not text:
            return self.stamp(doc.reject("empty after cleaning"), text="", meta=meta)
        return self.stamp(doc, text=text, meta=meta)


def percent(share: float) -> str:
    """0.873 -> '87.3%', 0.6 -> '60%'."""
    return f"{share * 100:.6g}%"


def normalize_text(text: str) -> str:
    """NFC, no control characters, single spaces, stripped lines, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").translate(LINE_BREAKS)
    text = CONTROL.sub("", unicodedata.normalize("NFC", text))
    text = HORIZONTAL_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return MANY_NEWLINES.sub("\n\n", text).strip("\n")


# YAML-ish front matter: only title and date are read, so a small pattern does instead of a YAML parser.
MD_FRONT_MATTER = re.compile(r"\A---\n.*?\n(?:---|\.\.\.)(?:\n|\Z)", re.DOTALL)
MD_FRONT_FIELD = re.compile(r"^(title|date):[ \t]*(\S.*?)[ \t]*$", re.MULTILINE | re.IGNORECASE)
# markdown-it drops whatever lies deeper than maxNesting (default 20: a long `>>>>` mail thread would
# lose its oldest messages); 100 keeps such text and stays far below the Python recursion limit.
MD_MAX_NESTING = 100
# What a boundary of rendered Markdown leaves between the texts either side of it, weakest first.
MD_SEPARATORS = ("", " ", "\n", "\n\n")
CELL, LINE, PARAGRAPH = 1, 2, 3
MD_CELL_TAGS = frozenset({"td", "th"})
MD_LINE_TAGS = frozenset({"li", "tr", "thead", "tbody", "tfoot", "caption", "dt", "dd"})
MD_LIST_TAGS = frozenset({"ul", "ol"})
MD_BLANK_LINES = re.compile(r"[^\S\n]*\n\s*")


@cache
def _markdown_parser() -> MarkdownIt:
    """CommonMark plus GFM tables and strikethrough; built once per process, since building it is not free."""
    return MarkdownIt("commonmark", {"maxNesting": MD_MAX_NESTING}).enable(["table", "strikethrough"])


def strip_markdown(text: str) -> tuple[str, dict[str, str]]:
    """Markdown -> plain text and front-matter title/date: markup goes, the words (link text too) stay."""
    # markdown-it turns NUL into U+FFFD, which normalize_text would keep; other control characters go later.
    text = text.replace("\r\n", "\n").replace("\x00", "")
    meta: dict[str, str] = {}
    front = MD_FRONT_MATTER.match(text)
    if front:
        for key, value in MD_FRONT_FIELD.findall(front.group(0)):
            value = value.strip("'\"")
            if key.lower() == "date":
                value = first_iso_date([value]) or ""
            if value:
                meta.setdefault(key.lower(), value)
        text = text[front.end():]
    return rendered_markdown_text(_markdown_parser().render(text)), meta


def rendered_markdown_text(html: str) -> str:
    """The text of Markdown rendered to HTML, all of it: a Markdown file has no page furniture, so
    none of the HTML path's main-text heuristics apply; only images and scripts, styles and widgets go.

    Table cells share their row's line; list items, rows and soft line breaks keep a line each (as
    in the source, so line rules still see source lines); other blocks become paragraphs. The walk
    is iterative because inline HTML can nest deeper than the Python stack.
    """
    soup = BeautifulSoup(html, "lxml")
    chunks: list[str] = []
    parts: list[str] = []
    pending = 0
    pre = 0
    items = 0

    def boundary(rank: int) -> None:
        """End the text collected so far; the strongest boundary between two texts separates them."""
        nonlocal pending
        collected = "".join(parts).strip()
        parts.clear()
        if not pre:
            collected = MD_BLANK_LINES.sub("\n", collected)
        if collected:
            if chunks:
                chunks.append(MD_SEPARATORS[pending])
            chunks.append(collected)
            pending = rank
        else:
            pending = max(pending, rank)

    stack: list[tuple[object, bool]] = [(soup, True)]
    while stack:
        node, entering = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, NON_TEXT_STRINGS):
                parts.append(str(node))
            continue
        if not isinstance(node, Tag) or (entering and node.name in NON_TEXT_TAGS):
            continue
        name = node.name
        if name == "br":
            parts.append("\n")
            continue
        if name in MD_CELL_TAGS:
            rank = CELL
        elif name in MD_LINE_TAGS or (name in MD_LIST_TAGS and items):
            rank = LINE
        else:
            rank = PARAGRAPH if name in BLOCK_TAGS else 0
        if rank:
            boundary(rank)
        if entering:
            pre += name == "pre"
            items += name == "li"
            stack.append((node, False))
            stack.extend((child, True) for child in reversed(node.contents))
        else:
            pre -= name == "pre"
            items -= name == "li"
    boundary(PARAGRAPH)
    return "".join(chunks)
