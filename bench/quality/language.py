"""Language identification quality and speed: langdetect vs py3langid through the `language` step.

Corpus: one sentence a line, `<iso639-1>.txt` per language (Leipzig sentences). Two
granularities, because the step sees whole documents but short texts are where detectors
differ: single sentences, and paragraphs of 5 consecutive sentences joined by a space. Both
backends run through `textmill.tasks.language.LanguageTagger.process` with default options except
`backend`, so `und` (below `min_chars` or `min_score`) counts as wrong; its rate is reported
separately so that a cautious backend and a wrong one can be told apart.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import markdown_table
from bench.quality import QualityError, bar, batches, finish, rate, require_dir
from textmill.tasks.document import Document
from textmill.tasks.language import UNDETERMINED, LanguageTagger

BACKENDS = ("langdetect", "py3langid")
PARAGRAPH = 5
CONFUSIONS = 8


def load(corpus: Path, limit: int | None) -> dict[str, list[str]]:
    """Sentences per language code (file stem), the first `limit` of each file when given."""
    root = require_dir(corpus, "langid")
    files = sorted(p for p in root.glob("*.txt") if len(p.stem) == 2)
    if not files:
        raise QualityError(f"{root} is not the langid corpus: no <iso639-1>.txt files")
    sentences = {}
    for path in files:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        sentences[path.stem] = lines[:limit] if limit else lines
    return sentences


def paragraphs(lines: list[str], size: int = PARAGRAPH) -> list[str]:
    """Consecutive groups of `size` sentences joined by a space; an incomplete last group is dropped."""
    return [" ".join(lines[i : i + size]) for i in range(0, len(lines) - size + 1, size)]


def tag_all(tagger: LanguageTagger, texts: dict[str, list[str]], label: str) -> tuple[dict[str, list[str]], float]:
    """Predicted codes per gold language, and the seconds spent in `process` alone."""
    from textmill.flows.shard import BATCH

    items = [(lang, Document(id=f"{lang}/{i}", path="", sha256="", text=t))
             for lang, lines in texts.items() for i, t in enumerate(lines)]
    predicted: dict[str, list[str]] = {lang: [] for lang in texts}
    seconds = 0.0
    with bar(label, len(items)) as advance:
        for batch in batches(items, BATCH):
            docs = [doc for _, doc in batch]
            started = time.perf_counter()
            out = tagger.process(docs)
            seconds += time.perf_counter() - started
            for (lang, _), doc in zip(batch, out):
                predicted[lang].append(doc.lang or UNDETERMINED)
            advance(len(batch))
    return predicted, seconds


def measure(backend: str, granularity: str, texts: dict[str, list[str]]) -> dict[str, Any]:
    """Accuracy per language and overall, und rate, confusions and throughput of one backend on one granularity."""
    tagger = LanguageTagger(LanguageTagger.Options(backend=backend))
    tagger.setup()
    tagger.detect(next(iter(texts.values()))[0])  # warm-up
    predicted, seconds = tag_all(tagger, texts, f"{backend} {granularity}")
    per_lang = {lang: sum(p == lang for p in preds) / len(preds) for lang, preds in predicted.items() if preds}
    every = [(lang, p) for lang, preds in predicted.items() for p in preds]
    und_per_lang = {lang: sum(p == UNDETERMINED for p in preds) / len(preds) for lang, preds in predicted.items() if preds}
    confusions = Counter(f"{lang}->{p}" for lang, p in every if p != lang)
    n = len(every)
    chars = sum(len(t) for lines in texts.values() for t in lines)
    return {
        "texts": n,
        "accuracy": sum(lang == p for lang, p in every) / n,
        "und_rate": sum(p == UNDETERMINED for _, p in every) / n,
        "accuracy_when_decided": sum(lang == p for lang, p in every) / max(1, sum(p != UNDETERMINED for _, p in every)),
        "per_language": per_lang,
        "und_per_language": und_per_lang,
        "top_confusions": confusions.most_common(CONFUSIONS),
        "seconds": seconds,
        "texts_per_s": rate(n, seconds),
        "chars_per_s": rate(chars, seconds),
    }


def run(corpus: Path, results: Path, limit: int | None, started: float) -> None:
    sentences = load(corpus, limit)
    inputs = {"sentence": sentences, "paragraph": {lang: paragraphs(lines) for lang, lines in sentences.items()}}
    runs = {
        f"{backend} {granularity}": measure(backend, granularity, texts)
        for backend in BACKENDS
        for granularity, texts in inputs.items()
    }
    data = {"corpus": str(corpus), "paragraph_sentences": PARAGRAPH, "runs": runs}
    finish(results, "language", data, markdown(runs, sentences), started)


def markdown(runs: dict[str, dict[str, Any]], sentences: dict[str, list[str]]) -> str:
    names = list(runs)
    rows = [
        [lang, len(sentences[lang]), *(runs[name]["per_language"].get(lang) for name in names)]
        for lang in sorted(sentences)
    ]
    rows.append(["**all**", sum(map(len, sentences.values())), *(runs[name]["accuracy"] for name in names)])
    speed = [
        (name, r["texts"], r["accuracy"], r["und_rate"], r["accuracy_when_decided"], r["texts_per_s"],
         r["chars_per_s"], r["seconds"])
        for name, r in runs.items()
    ]
    confusions = [(name, ", ".join(f"{c} {k}" for c, k in r["top_confusions"]) or "-") for name, r in runs.items()]
    und = [[lang, *(runs[name]["und_per_language"].get(lang) for name in names)] for lang in sorted(sentences)]
    return "\n".join([
        f"## Language identification: accuracy per language (`und` counts as wrong; paragraphs = {PARAGRAPH} sentences)\n",
        markdown_table(["language", "sentences", *(f"{n} acc" for n in names)], rows),
        "### Overall, und rate and throughput (time in `LanguageTagger.process` only)\n",
        markdown_table(
            ["backend, granularity", "texts", "accuracy", "und rate", "accuracy of non-und", "texts/s", "chars/s", "seconds"],
            speed,
        ),
        "### und rate per language\n",
        markdown_table(["language", *names], und),
        "### Most frequent errors (gold->predicted count)\n",
        markdown_table(["backend, granularity", "errors"], confusions),
    ])
