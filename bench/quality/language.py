"""Language identification quality and speed of every `language` backend through the step.

Three inputs, because the step sees whole documents but short texts are where detectors differ,
and because a detector must also know when it does not know:
- `langid/` sentences (Leipzig), one sentence a line, `<iso639-1>.txt` per language;
- paragraphs of 5 consecutive sentences of the same files joined by a space;
- `masakhanews-dev/` beside `langid/` (when present): news articles in 16 African languages,
  most of them outside some detectors' languages.
Every backend runs through `textmill.tasks.language.LanguageTagger.process` with default options
except `backend`. Texts in a language the backend can name (its languages minus `exclude`) score
**accuracy** (`und` counts as wrong); texts in any other language score **right-or-und**: only
`und` is right, because any language named for them is wrong.

    python -m bench.quality language --corpus ../shared/corpora/langid
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import markdown_table
from bench.quality import QualityError, bar, batches, finish, rate, require_dir
from textmill.tasks.document import Document
from textmill.tasks.language import BACKEND_LIBRARIES, UNDETERMINED, LanguageTagger
from textmill.tasks.language_codes import iso_code

BACKENDS = tuple(BACKEND_LIBRARIES)
PARAGRAPH = 5
CONFUSIONS = 8
MASAKHANE = "masakhanews-dev"


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


def load_masakhane(folder: Path) -> dict[str, list[str]]:
    """Article texts per ISO code (the file's ISO 639-3 `lang` folded like the step's codes)."""
    texts: dict[str, list[str]] = {}
    for line in (folder / "dev-sample.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            texts.setdefault(iso_code(record["lang"]), []).append(record["text"])
    return texts


def measure(tagger: LanguageTagger, label: str, texts: dict[str, list[str]]) -> dict[str, Any]:
    """Accuracy on the languages `tagger` can name, right-or-und on the others, und rate,
    confusions and throughput."""
    known = tagger.languages - set(tagger.options.exclude)
    predicted, seconds = tag_all(tagger, texts, label)
    covered = [(lang, p) for lang, preds in predicted.items() if lang in known for p in preds]
    others = [(lang, p) for lang, preds in predicted.items() if lang not in known for p in preds]
    every = covered + others
    confusions = Counter(f"{lang}->{p}" for lang, p in every if p != lang)
    chars = sum(len(t) for lines in texts.values() for t in lines)
    return {
        "texts": len(every),
        "covered_texts": len(covered),
        "accuracy": sum(lang == p for lang, p in covered) / len(covered) if covered else None,
        "other_texts": len(others),
        "other_languages": sorted({lang for lang, _ in others}),
        "right_or_und": sum(p == UNDETERMINED for _, p in others) / len(others) if others else None,
        "und_rate": sum(p == UNDETERMINED for _, p in every) / len(every),
        "per_language": {lang: sum(p == lang for p in preds) / len(preds) for lang, preds in predicted.items() if preds},
        "top_confusions": confusions.most_common(CONFUSIONS),
        "seconds": seconds,
        "texts_per_s": rate(len(every), seconds),
        "chars_per_s": rate(chars, seconds),
    }


def run(corpus: Path, results: Path, limit: int | None, started: float) -> None:
    sentences = load(corpus, limit)
    inputs = {"sentence": sentences, "paragraph": {lang: paragraphs(lines) for lang, lines in sentences.items()}}
    masakhane = Path(os.path.normpath(corpus / os.pardir / MASAKHANE))
    if (masakhane / "dev-sample.jsonl").is_file():
        articles = load_masakhane(masakhane)
        inputs[MASAKHANE] = {lang: texts[:limit] if limit else texts for lang, texts in articles.items()}
    runs: dict[str, dict[str, Any]] = {}
    for backend in BACKENDS:
        tagger = LanguageTagger(LanguageTagger.Options(backend=backend))
        loading = time.perf_counter()
        tagger.setup()
        load_seconds = time.perf_counter() - loading
        for granularity, texts in inputs.items():
            runs[f"{backend} {granularity}"] = {
                **measure(tagger, f"{backend} {granularity}", texts), "load_seconds": load_seconds
            }
    data = {"corpus": str(corpus), "paragraph_sentences": PARAGRAPH, "inputs": list(inputs), "runs": runs}
    finish(results, "language", data, markdown(runs), started)


def markdown(runs: dict[str, dict[str, Any]]) -> str:
    summary = [
        (name, r["texts"], r["covered_texts"], r["accuracy"], r["other_texts"], ", ".join(r["other_languages"]) or "-",
         r["right_or_und"], r["und_rate"], r["texts_per_s"], r["chars_per_s"], r["load_seconds"])
        for name, r in runs.items()
    ]
    languages = sorted({lang for r in runs.values() for lang in r["per_language"]})
    names = list(runs)
    per_lang = [[lang, *(runs[name]["per_language"].get(lang) for name in names)] for lang in languages]
    confusions = [(name, ", ".join(f"{c} {k}" for c, k in r["top_confusions"]) or "-") for name, r in runs.items()]
    return "\n".join([
        f"## Language identification (paragraphs = {PARAGRAPH} sentences; time in `LanguageTagger.process` only)\n",
        markdown_table(
            ["backend, input", "texts", "in its languages", "accuracy", "in others", "other languages",
             "right or und", "und rate", "texts/s", "chars/s", "model load s"],
            summary,
        ),
        "### Right answers per gold language\n",
        markdown_table(["language", *names], per_lang),
        "### Most frequent errors (gold->predicted count)\n",
        markdown_table(["backend, input", "errors"], confusions),
    ])
