"""The article of an HTML page by trafilatura, checked against textmill's own extraction.

trafilatura returns the article as clean HTML, which `html_text` then renders like any page, so
paragraphs, line breaks and lists come out as in the rest of textmill (its plain-text output
would join paragraphs with single newlines).

trafilatura (in its precision mode, reader comments left out) finds the article body more
precisely than `html_text`'s main-container heuristic, but on some pages it keeps only part of
it: a recipe's steps, an article split by a gallery. So its text is used only when it holds at
least `fallback_share` of the words `html_text` found in the page's main container; otherwise,
or when trafilatura finds nothing or fails, `html_text`'s extraction stands. On the Article
Extraction Benchmark this combination beats each of the two alone (docs/benchmarks.md, "clean").
"""
from __future__ import annotations

import logging
from functools import cache
from typing import Any

from textmill.tasks.html_text import html_to_text

@cache
def trafilatura_config() -> Any:
    """trafilatura's settings without its extraction timeout, which uses SIGALRM and so fails
    outside the main thread (shard tasks may run on threads)."""
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    return config


def trafilatura_text(html: str, link_density_max: float) -> str:
    """trafilatura's main text of `html`, '' when it finds none or fails on the page."""
    import trafilatura

    try:
        article = trafilatura.extract(
            html, output_format="html", include_comments=False, favor_precision=True, config=trafilatura_config()
        )
        return html_to_text(article, link_density_max).text if article else ""
    except Exception as exc:  # noqa: BLE001 - any failure of the second extractor means "use the first"
        logging.getLogger(__name__).debug("trafilatura failed (%s: %s); using textmill's extraction", type(exc).__name__, exc)
        return ""


def choose_main_text(own: str, html: str, fallback_share: float, link_density_max: float) -> str:
    """trafilatura's text for `html` when it keeps at least `fallback_share`
    of the words of `own` (textmill's extraction), else `own`. A page where textmill finds no
    main text at all (only furniture) stays empty: trafilatura would return a menu."""
    own_words = len(own.split())
    if own_words == 0:
        return own
    other = trafilatura_text(html, link_density_max)
    if other.strip() and len(other.split()) >= fallback_share * own_words:
        return other
    return own
