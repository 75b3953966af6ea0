"""Main-text extraction quality on the Article Extraction Benchmark (AEB).

The metric is the AEB's own (scrapinghub/article-extraction-benchmark, evaluate.py), rewritten
here so that the figures compare with its published ones: `\\w+` tokens (case kept), word
4-gram shingles counted as multisets (a text of fewer than 4 tokens is one shingle, an empty
text none), per page tp/fp/fn; precision averaged over the pages where the extractor returned
some text, recall over the pages whose gold text is non-empty, F1 from the two averages.
An empty extraction therefore lowers recall but not precision, exactly as in the AEB.

Extractors, all on the same decoded HTML: textmill's clean step as the pipeline runs it
(trafilatura checked against textmill's own extraction), the clean step with textmill's
beautifulsoup4 extraction alone, trafilatura with default settings, trafilatura as the AEB runs it (`include_comments=False`,
the setting behind the published figure), and the whole visible page text.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trafilatura
from bs4 import BeautifulSoup

from bench.common import markdown_table
from bench.quality import QualityError, bar, clean, finish, rate, read_corpus, require_dir
from textmill.tasks.document import Document

# Published F1 figures quoted in the corpus README (AEB README, trafilatura 2.0.0 era).
REFERENCE_F1 = {"trafilatura 2.0.0": 0.958, "readability-lxml": 0.922, "justext": 0.804, "whole-page text": 0.665}
TOKEN = re.compile(r"\w+")
NGRAM = 4
WORST = 10
Counts = tuple[float, float, float]


def shingles(text: str) -> Counter[tuple[str, ...]]:
    """The AEB's shingles: word 4-grams as a multiset; fewer than 4 tokens make one shingle."""
    tokens = TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + NGRAM]) for i in range(max(1, len(tokens) - NGRAM + 1)) if tokens[i : i + NGRAM])


def match(true: str, pred: str) -> Counts:
    """tp, fp, fn over shingle counts, normalised to sum to 1 (as the AEB does; P and R are unchanged)."""
    gold, got = shingles(true), shingles(pred)
    tp = sum((gold & got).values())
    fp = sum((got - gold).values())
    fn = sum((gold - got).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fp == 0 else tp / (tp + fp)


def recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fn == 0 else tp / (tp + fn)


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def averaged(counts: list[Counts]) -> dict[str, float]:
    """The AEB's summary: mean P over pages with predicted text, mean R over pages with gold text."""
    p = statistics.mean([precision(*c) for c in counts if c[0] + c[1] > 0] or [0.0])
    r = statistics.mean([recall(*c) for c in counts if c[0] + c[2] > 0] or [0.0])
    return {"precision": p, "recall": r, "f1": f1(p, r)}


def whole_page_text(html: str) -> str:
    """Every visible text of the page: bs4 `get_text` once scripts and styles are gone."""
    soup = BeautifulSoup(html, "lxml")
    for tag in soup(["script", "style"]):
        tag.decompose()
    return soup.get_text(" ", strip=True)


def trafilatura_default(html: str) -> str:
    return trafilatura.extract(html) or ""


def trafilatura_aeb(html: str) -> str:
    return trafilatura.extract(html, include_comments=False) or ""


def run_per_page(name: str, docs: list[Document], extract: Callable[[str], str]) -> tuple[dict[str, str], float]:
    """Extract every page, timing only the extractor calls (after one untimed warm-up call)."""
    texts: dict[str, str] = {}
    seconds = 0.0
    extract(docs[0].text)
    with bar(name, len(docs)) as advance:
        for doc in docs:
            started = time.perf_counter()
            texts[page_id(doc)] = extract(doc.text) if doc.active else ""
            seconds += time.perf_counter() - started
            advance(1)
    return texts, seconds


def run_textmill(docs: list[Document], **overrides: Any) -> tuple[dict[str, str], float]:
    """The clean step over the pages, batched as a shard task batches them; rejected pages give ''."""
    cleaned, seconds = clean(docs, **overrides)
    return {page_id(d): d.text if d.active else "" for d in cleaned}, seconds


def page_id(doc: Document) -> str:
    return doc.id.split("/")[-1].split(".")[0]


def load(corpus: Path, limit: int | None) -> tuple[list[Document], dict[str, dict[str, str]]]:
    root = require_dir(corpus, "AEB", "html", "ground-truth.json")
    truth = json.loads((root / "ground-truth.json").read_text(encoding="utf-8"))
    docs = [d for d in read_corpus(root / "html", limit, suffix=".html.gz") if page_id(d) in truth]
    if not docs:
        raise QualityError(f"{root}/html has no <id>.html.gz page listed in ground-truth.json")
    return docs, truth


def score(truth: dict[str, dict[str, str]], texts: dict[str, str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Averaged metrics and per-page P, R, F1."""
    per_page: dict[str, dict[str, float]] = {}
    counts = []
    for pid, pred in texts.items():
        c = match(truth[pid].get("articleBody", ""), pred)
        counts.append(c)
        p, r = precision(*c), recall(*c)
        per_page[pid] = {"precision": p, "recall": r, "f1": f1(p, r), "empty": not TOKEN.search(pred)}
    return averaged(counts), per_page


def run(corpus: Path, results: Path, limit: int | None, started: float) -> None:
    docs, truth = load(corpus, limit)
    extractors: dict[str, tuple[dict[str, str], float]] = {"textmill clean": run_textmill(docs)}
    extractors["textmill clean, textmill extractor only"] = run_textmill(docs, html_extractor="textmill")
    extractors["trafilatura (defaults)"] = run_per_page("trafilatura (defaults)", docs, trafilatura_default)
    extractors["trafilatura (AEB: no comments)"] = run_per_page("trafilatura (AEB)", docs, trafilatura_aeb)
    extractors["whole-page text"] = run_per_page("whole-page text", docs, whole_page_text)
    summary: dict[str, Any] = {}
    pages: dict[str, dict[str, dict[str, float]]] = {}
    for name, (texts, seconds) in extractors.items():
        metrics, pages[name] = score(truth, texts)
        empty = sum(1 for p in pages[name].values() if p["empty"])
        summary[name] = {**metrics, "seconds": seconds, "pages_per_s": rate(len(texts), seconds), "empty": empty}
    worst = worst_pages(pages, truth)
    data = {"corpus": str(corpus), "pages": len(docs), "extractors": summary, "reference_f1": REFERENCE_F1,
            "worst_textmill_pages": worst, "per_page": pages}
    finish(results, "clean", data, markdown(len(docs), summary, worst), started)


def worst_pages(pages: dict[str, dict[str, dict[str, float]]], truth: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The pages where textmill's F1 is lowest, with trafilatura's F1 on the same page."""
    ours = pages["textmill clean"]
    ranked = sorted(ours, key=lambda pid: (ours[pid]["f1"], pid))[:WORST]
    return [
        {"id": pid, "url": truth[pid].get("url", ""), **{k: ours[pid][k] for k in ("precision", "recall", "f1")},
         "trafilatura_f1": pages["trafilatura (defaults)"][pid]["f1"]}
        for pid in ranked
    ]


def markdown(n: int, summary: dict[str, Any], worst: list[dict[str, Any]]) -> str:
    rows = [(name, s["precision"], s["recall"], s["f1"], s["pages_per_s"], s["empty"]) for name, s in summary.items()]
    parts = [
        f"## Main-text extraction, Article Extraction Benchmark ({n} pages)\n",
        "AEB metric: word-4-gram shingles, P and R averaged over pages, F1 from the averages. "
        "pages/s times the extraction only (the same decoded HTML for all).\n",
        markdown_table(["extractor", "precision", "recall", "F1", "pages/s", "empty pages"], rows),
        "Published reference F1 (AEB README, quoted in the corpus README), for context:\n",
        markdown_table(["extractor", "F1"], REFERENCE_F1.items()),
        f"### Per-page failures worth a look: the {len(worst)} lowest textmill F1\n",
        markdown_table(
            ["id", "url", "P", "R", "F1", "trafilatura F1"],
            [(w["id"][:16], w["url"], w["precision"], w["recall"], w["f1"], w["trafilatura_f1"]) for w in worst],
        ),
    ]
    return "\n".join(parts)
