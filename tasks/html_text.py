"""HTML -> main text and page metadata, with beautifulsoup4 on the lxml parser.

Every walk over the tree is iterative: lxml happily builds a tree 10,000 levels deep, and a
recursive walk over it would overflow the Python stack.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import CData, Comment, Declaration, Doctype, ProcessingInstruction
from bs4.exceptions import ParserRejectedMarkup
from lxml import etree

# What markup alone can make the parsers raise, so what counts as bad input rather than a bug:
# bs4 turns lxml's refusals (ParserError, an unknown or undecodable declared encoding) into
# ParserRejectedMarkup; other lxml errors are LxmlError; text lxml cannot encode (a lone surrogate)
# is a UnicodeEncodeError. RecursionError and MemoryError are not here: every walk is iterative and
# the reader caps the input size, so either one means a bug or a starved machine, not a bad page.
MARKUP_FAULTS: tuple[type[Exception], ...] = (ParserRejectedMarkup, etree.LxmlError, UnicodeError)

# Elements that never hold article text.
NON_TEXT_TAGS = frozenset({
    "script", "style", "noscript", "template", "iframe", "svg", "button", "select", "textarea", "input",
    "object", "embed", "canvas", "video", "audio", "map", "dialog", "head", "title", "meta", "link",
})
# Page furniture by element name; skipped unless it holds most of the text (a page-wide <form>).
FURNITURE_TAGS = frozenset({"nav", "header", "footer", "aside", "form"})
# Elements that start a new paragraph.
BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "body", "center", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "html", "li",
    "main", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "ul", "caption", "menu",
})
# Containers judged as a whole for link density, so a link list with a few words of prose goes too.
LINK_GROUP_TAGS = frozenset({"ul", "ol", "dl", "table", "menu"})
NON_TEXT_STRINGS = (Comment, CData, Declaration, Doctype, ProcessingInstruction)
# class/id words that mark page furniture inside an otherwise useful container.
FURNITURE = re.compile(
    r"(?:^|[\s_-])(?:comments?|share|sharing|social|related|recommended|newsletter|subscribe|"
    r"breadcrumbs?|cookie|promo|advert|ads?|sidebar|menu|byline|author-bio|tags?)(?:$|[\s_-])",
    re.IGNORECASE,
)
# Where publishers put the main text, most specific first, with the share of the body's text a
# match must hold to be believed (schema.org's articleBody is explicit, so a little suffices).
MAIN_SELECTORS = (('[itemprop="articleBody"]', 0.05), ("article", 0.3), ("main", 0.3), ('[role="main"]', 0.3))
DATE_META = (
    "article:published_time", "og:published_time", "datepublished", "date", "pubdate", "publishdate",
    "publish-date", "publish_date", "article.published", "dc.date", "dc.date.issued", "dcterms.created",
    "dcterms.date", "parsely-pub-date", "sailthru.date", "cxenseparse:recs:publishtime",
)
ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
JSONLD_DATE = re.compile(r'"datePublished"\s*:\s*"([^"]+)"')
SPACES = re.compile(r"\s+")
HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
# Readability fallback thresholds, tuned on the AEB corpus.
PARAGRAPH_SHARE = 0.1
DENSEST_SHARE = 0.6


@dataclass(slots=True)
class _Block:
    """A paragraph being collected: its text parts and how many of its characters are link text."""

    group: int | None
    parts: list[str] = field(default_factory=list)
    link_chars: int = 0


@dataclass(frozen=True, slots=True)
class HtmlText:
    """What a page yields: main text (paragraphs separated by blank lines) and metadata."""

    text: str
    meta: dict[str, str]


def html_to_text(html: str, link_density_max: float = 0.5) -> HtmlText:
    """Extract the main text and metadata of an HTML page."""
    soup = BeautifulSoup(html, "lxml")
    meta = page_metadata(soup, html)
    sizes, psizes = _text_sizes(soup)
    root = main_container(soup, sizes, psizes)
    blocks = _collect_blocks(root, psizes, furniture_max_chars=psizes.get(id(root), 0) // 2)
    return HtmlText(text=_render(blocks, link_density_max), meta=meta)


def page_metadata(soup: BeautifulSoup, html: str) -> dict[str, str]:
    """Title, canonical URL and publication date from the page's head, when present."""
    meta: dict[str, str] = {}
    named: dict[str, str] = {}
    for tag in soup.find_all("meta"):
        key = (tag.get("property") or tag.get("name") or tag.get("itemprop") or "")
        content = tag.get("content")
        if isinstance(key, str) and isinstance(content, str) and content.strip():
            named.setdefault(key.strip().lower(), content.strip())
    title = named.get("og:title") or named.get("twitter:title")
    if not title and soup.title is not None:
        title = soup.title.get_text(" ", strip=True)
    if title:
        meta["title"] = SPACES.sub(" ", title)
    canonical = soup.find("link", rel="canonical")
    url = canonical.get("href") if canonical is not None else None
    url = url if isinstance(url, str) and url.strip() else named.get("og:url")
    if url:
        meta["url"] = url.strip()
    date = first_iso_date([named.get(key) for key in DATE_META] + JSONLD_DATE.findall(html[:200_000]))
    if date is None:
        times = soup.find_all("time", attrs={"itemprop": "datePublished"}) or soup.find_all("time", pubdate=True)
        date = first_iso_date([t.get("datetime") for t in times])
    if date:
        meta["date"] = date
    return meta


def first_iso_date(candidates: list[object]) -> str | None:
    """The first candidate that starts with an ISO date, as YYYY-MM-DD."""
    for value in candidates:
        if isinstance(value, str):
            match = ISO_DATE.match(value.strip())
            if match:
                return match.group(0)
    return None


def _text_sizes(soup: BeautifulSoup) -> tuple[dict[int, int], dict[int, int]]:
    """Visible text characters, and those inside `<p>`, under every element (by `id()`).

    Computed in one post-order pass so that every later size check is a lookup: measuring each
    candidate with `get_text()` would be quadratic on a deeply nested page.
    """
    sizes: dict[int, int] = {}
    psizes: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(soup, True)]
    while stack:
        node, entering = stack.pop()
        if not isinstance(node, Tag):
            continue
        if entering:
            if _never_text(node):
                sizes[id(node)] = psizes[id(node)] = 0
                continue
            stack.append((node, False))
            stack.extend((child, True) for child in node.contents if isinstance(child, Tag))
        else:
            sizes[id(node)] = sum(
                sizes.get(id(child), 0) if isinstance(child, Tag) else
                0 if isinstance(child, NON_TEXT_STRINGS) else len(child.strip())
                for child in node.contents
            )
            psizes[id(node)] = sizes[id(node)] if node.name == "p" else sum(
                psizes.get(id(child), 0) for child in node.contents if isinstance(child, Tag)
            )
    return sizes, psizes


def main_container(soup: BeautifulSoup, sizes: dict[int, int], psizes: dict[int, int]) -> Tag:
    """The element holding the article, so sidebars and teaser lists around it are left out.

    First a marked container (`<article>`, `<main>`, ...) holding a fair share of the page's
    text (a teaser `<article>` in a sidebar must not win), else the element whose child
    paragraphs hold most of the paragraph text (grandchildren count half), as readability does.
    """
    body = soup.body or soup
    total = sizes.get(id(body), 0)
    if total == 0:
        return body
    for selector, share in MAIN_SELECTORS:
        candidates = soup.select(selector)
        if candidates:
            best = max(candidates, key=lambda tag: sizes.get(id(tag), 0))
            if sizes.get(id(best), 0) >= share * total:
                return best
    scores: dict[int, float] = {}
    nodes: dict[int, Tag] = {}
    paragraphs = body.find_all("p")
    for p in paragraphs:
        for weight, parent in zip((1.0, 0.5), (p.parent, p.parent.parent if p.parent else None)):
            if isinstance(parent, Tag):
                scores[id(parent)] = scores.get(id(parent), 0.0) + weight * sizes.get(id(p), 0)
                nodes[id(parent)] = parent
    paragraph_total = psizes.get(id(body), 0)
    if not scores or paragraph_total < PARAGRAPH_SHARE * total:
        return body
    best = nodes[max(scores, key=scores.__getitem__)]
    return best if psizes.get(id(best), 0) >= DENSEST_SHARE * paragraph_total else body


def _collect_blocks(root: Tag, psizes: dict[int, int], furniture_max_chars: int) -> list[_Block]:
    """Walk the tree once (iteratively), splitting text into paragraphs at block boundaries.

    Furniture (by tag or by class/id) is skipped only when it holds at most
    `furniture_max_chars` paragraph characters: a wrapper called "has-sidebar" may hold the article.
    """
    blocks: list[_Block] = []
    current = _Block(group=None)
    links = 0
    pre = 0
    groups: list[int] = []
    stack: list[tuple[object, bool]] = [(root, True)]

    def flush() -> None:
        nonlocal current
        if current.parts:
            blocks.append(current)
        current = _Block(group=groups[0] if groups else None)

    while stack:
        node, entering = stack.pop()
        if isinstance(node, NavigableString):
            if isinstance(node, NON_TEXT_STRINGS):
                continue
            text = str(node) if pre else SPACES.sub(" ", str(node))
            current.parts.append(text)
            if links:
                current.link_chars += len(text.strip())
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name
        if entering:
            if _never_text(node) or (_is_furniture(node) and psizes.get(id(node), 0) <= furniture_max_chars):
                continue
            if name == "br":
                current.parts.append("\n")
                continue
            if name in BLOCK_TAGS:
                flush()
            if name in LINK_GROUP_TAGS:
                groups.append(id(node))
                current.group = groups[0]
            links += name == "a" and node.get("href") is not None
            pre += name == "pre"
            stack.append((node, False))
            stack.extend((child, True) for child in reversed(node.contents))
        else:
            links -= name == "a" and node.get("href") is not None
            pre -= name == "pre"
            if name in BLOCK_TAGS:
                flush()
            if name in LINK_GROUP_TAGS:
                groups.pop()
                current.group = groups[0] if groups else None
    flush()
    return blocks


def _never_text(node: Tag) -> bool:
    """Scripts, styles, widgets and hidden elements: never part of the text."""
    if node.name in NON_TEXT_TAGS or node.has_attr("hidden") or node.get("aria-hidden") == "true":
        return True
    style = node.get("style")
    return isinstance(style, str) and HIDDEN_STYLE.search(style) is not None


def _is_furniture(node: Tag) -> bool:
    """Navigation, headers, footers, forms, and containers named as comments, share bars and such."""
    if node.name in FURNITURE_TAGS:
        return True
    if node.name in ("p", "article", "main", "body", "html"):
        return False
    classes = node.get("class") or []
    label = " ".join(classes) if isinstance(classes, list) else str(classes)
    return FURNITURE.search(f"{label} {node.get('id') or ''}") is not None


def _render(blocks: list[_Block], link_density_max: float) -> str:
    """Join the paragraphs that are not link-dense, each group of lists/tables judged as a whole."""
    group_chars: dict[int, list[int]] = {}
    for block in blocks:
        if block.group is not None:
            totals = group_chars.setdefault(block.group, [0, 0])
            totals[0] += len("".join(block.parts).strip())
            totals[1] += block.link_chars
    paragraphs = []
    for block in blocks:
        text = "".join(block.parts).strip()
        if not text:
            continue
        if block.link_chars / len(text) > link_density_max:
            continue
        if block.group is not None:
            chars, link_chars = group_chars[block.group]
            if chars and link_chars / chars > link_density_max:
                continue
        paragraphs.append(text)
    return "\n\n".join(paragraphs)
