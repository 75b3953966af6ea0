"""The `dedupe` step, called directly: summaries, clustering, canonical choice, decisions."""
from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from textmill.tasks.dedupe import (
    Deduplicator,
    decode_signature,
    estimated_containment,
    normalized_words,
    shingles,
    size_bucket,
)
from conftest import shared_path
from textmill.tasks.document import Document
from textmill.tasks.union_find import UnionFind

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "seeds"

_DATE_PREFIX = re.compile(r"\s*date (\d{4}-\d{2}-\d{2}) ")
_TWEET_TAIL = re.compile(r"\s*pic\.twitter\.com/\S+.*$")
_FURNITURE = ("This comment contains spoilers", "To suggest a correction", "You can also highlight")


def stand_in_clean(raw: str) -> tuple[str, dict[str, Any]]:
    """A light stand-in for the real `clean` step: dedupe sees cleaned text in the pipeline."""
    meta: dict[str, Any] = {}
    match = _DATE_PREFIX.match(raw)
    if match:
        meta["date"] = match.group(1)
        raw = raw[match.end() :]
    lines = []
    for line in raw.splitlines():
        if line.startswith("Comments ("):
            break
        if any(marker in line for marker in _FURNITURE):
            continue
        lines.append(_TWEET_TAIL.sub("", line))
    return "\n".join(lines).strip(), meta


def make_doc(doc_id: str, text: str, path: str | None = None, **meta: Any) -> Document:
    return Document(id=doc_id, path=path or f"{doc_id}.txt", sha256="0" * 64, text=text, meta=meta)


def bbc_text(relative: str) -> str:
    return shared_path("corpora", "bbc", relative).read_text(encoding="utf-8")


def run(step: Deduplicator, docs: Iterable[Document]) -> dict[str, Any]:
    docs = list(docs)
    summaries = step.summarize(docs)
    return step.build_index((doc.id, summary) for doc, summary in zip(docs, summaries))


def cluster_of(index: dict[str, Any], doc_id: str) -> str:
    return Deduplicator().decide(index, doc_id, {})["cluster"]


@pytest.fixture(scope="module")
def seed_docs() -> list[Document]:
    docs = []
    for path in sorted(SEEDS.glob("*.txt")):
        text, meta = stand_in_clean(path.read_text(encoding="utf-8"))
        doc_id, rel = path.name[:3], f"seeds/{path.name}"
        docs.append(Document(id=doc_id, path=rel, sha256="0" * 64, text=text, meta=meta))
    assert len(docs) == 5
    return docs


def test_seeds_cluster_three_renderings_and_keep_other_articles_apart(seed_docs: list[Document]) -> None:
    index = run(Deduplicator(), seed_docs)
    assert index == {
        "clusters": {
            "000": {"cluster": "001", "duplicate_of": "001"},
            "001": {"cluster": "001", "duplicate_of": None},
            "004": {"cluster": "001", "duplicate_of": "001"},
        },
        "stats": {"documents": 5, "clusters": 1, "exact_duplicates": 0, "near_duplicates": 2},
    }
    assert cluster_of(index, "002") == "002"
    assert cluster_of(index, "003") == "003"


def test_summary_is_small_json_with_a_base64_signature(seed_docs: list[Document]) -> None:
    step = Deduplicator()
    summary = step.summarize(seed_docs[:1])[0]
    json.dumps(summary)
    assert set(summary) == {"key", "minhash", "size", "length", "date", "path"}
    assert isinstance(summary["minhash"], str)
    assert len(decode_signature(summary["minhash"])) == step.options.num_perm
    assert summary["length"] == len(seed_docs[0].text)
    assert summary["date"] == "2023-05-03"
    assert summary["path"] == seed_docs[0].path
    assert summary["size"] == len(shingles(normalized_words(seed_docs[0].text), 5))


def test_exact_key_ignores_case_punctuation_and_whitespace() -> None:
    a, b, c = Deduplicator().summarize(
        [
            make_doc("a", "The cat sat on the mat."),
            make_doc("b", "the  CAT sat\non the mat"),
            make_doc("c", "The cat sat on the hat."),
        ]
    )
    assert a["key"] == b["key"] != c["key"]


def test_exact_duplicates_cluster_with_canonical_by_date_then_path() -> None:
    text = bbc_text("business/001.txt")
    docs = [
        make_doc("d1", text, path="z/late.txt", date="2005-01-02"),
        make_doc("d2", text, path="y/undated.txt"),
        make_doc("d3", text, path="x/early-b.txt", date="2005-01-01"),
        make_doc("d4", text, path="w/early-a.txt", date="2005-01-01"),
    ]
    index = run(Deduplicator(), docs)
    assert {index["clusters"][d.id]["cluster"] for d in docs} == {"d4"}
    assert index["clusters"]["d4"]["duplicate_of"] is None
    assert [index["clusters"][d]["duplicate_of"] for d in ("d1", "d2", "d3")] == ["d4"] * 3
    assert index["stats"] == {"documents": 4, "clusters": 1, "exact_duplicates": 3, "near_duplicates": 0}

    undated = [make_doc(f"u{i}", text, path=path) for i, path in enumerate(["b.txt", "a.txt", "c.txt"])]
    assert cluster_of(run(Deduplicator(), undated), "u0") == "u1"


def test_canonical_is_the_longest_member() -> None:
    text = bbc_text("politics/290.txt")
    longer = text + "\nAn extra closing paragraph that only the fuller copy carries."
    docs = [make_doc("a", text, date="2005-01-01"), make_doc("b", longer, date="2005-03-01")]
    index = run(Deduplicator(), docs)
    assert index["clusters"]["a"] == {"cluster": "b", "duplicate_of": "b"}
    assert index["clusters"]["b"] == {"cluster": "b", "duplicate_of": None}


def test_truncated_copy_is_caught_by_containment_not_by_jaccard() -> None:
    words = bbc_text("politics/290.txt").split()
    full = make_doc("full", " ".join(words))
    truncated = make_doc("truncated", " ".join(words[: int(len(words) * 0.4)]))

    step = Deduplicator()
    summaries = step.summarize([full, truncated])
    signatures = [decode_signature(s["minhash"]) for s in summaries]
    jaccard = float((signatures[0] == signatures[1]).mean())
    assert jaccard < step.options.jaccard_threshold

    index = step.build_index([("full", summaries[0]), ("truncated", summaries[1])])
    assert index["clusters"]["truncated"] == {"cluster": "full", "duplicate_of": "full"}
    assert index["stats"]["near_duplicates"] == 1

    jaccard_only = Deduplicator(Deduplicator.Options(containment=False))
    assert jaccard_only.build_index([("full", summaries[0]), ("truncated", summaries[1])])["clusters"] == {}


def test_unrelated_documents_are_not_merged() -> None:
    docs = [
        make_doc("b", bbc_text("business/001.txt")),
        make_doc("s", bbc_text("sport/001.txt")),
        make_doc("t", bbc_text("tech/001.txt")),
    ]
    index = run(Deduplicator(), docs)
    assert index["clusters"] == {}
    assert index["stats"]["clusters"] == 0


def test_index_does_not_depend_on_input_order(seed_docs: list[Document]) -> None:
    text = bbc_text("business/002.txt")
    docs = seed_docs + [make_doc("x1", text, path="b.txt"), make_doc("x2", text, path="a.txt")]
    step = Deduplicator()
    pairs = list(zip([d.id for d in docs], step.summarize(docs)))
    expected = json.dumps(step.build_index(pairs))
    rng = random.Random(7)
    for _ in range(3):
        rng.shuffle(pairs)
        assert json.dumps(step.build_index(iter(pairs))) == expected


def test_empty_and_one_word_texts_do_not_crash() -> None:
    docs = [
        make_doc("empty1", ""),
        make_doc("empty2", "  \n "),
        make_doc("punct", "!!! ..."),
        make_doc("word1", "Hello"),
        make_doc("word2", "hello!"),
        make_doc("article", bbc_text("tech/001.txt")),
    ]
    step = Deduplicator()
    summaries = step.summarize(docs)
    assert [s["size"] for s in summaries[:5]] == [0, 0, 0, 1, 1]
    assert summaries[0]["key"] is None
    index = step.build_index((d.id, s) for d, s in zip(docs, summaries))
    assert set(index["clusters"]) == {"word1", "word2"}
    assert step.decide(index, "empty1", summaries[0]) == {"cluster": "empty1", "duplicate_of": None}
    assert step.build_index([]) == {
        "clusters": {},
        "stats": {"documents": 0, "clusters": 0, "exact_duplicates": 0, "near_duplicates": 0},
    }


def test_apply_marks_duplicates_and_records_provenance() -> None:
    step = Deduplicator()
    doc = make_doc("a", "some text here")
    duplicate = step.apply(doc, {}, {"cluster": "b", "duplicate_of": "b"})
    assert (duplicate.status, duplicate.cluster, duplicate.duplicate_of) == ("duplicate", "b", "b")
    assert duplicate.steps[-1].step == "dedupe"
    assert not duplicate.active
    assert doc.status == "ok" and doc.steps == ()

    single = step.apply(doc, {}, step.decide({"clusters": {}}, "a", {}))
    assert (single.status, single.cluster, single.duplicate_of) == ("ok", "a", None)


def test_thresholds_of_one_still_find_exact_copies() -> None:
    text = bbc_text("entertainment/001.txt")
    step = Deduplicator(Deduplicator.Options(jaccard_threshold=1.0, containment_threshold=1.0))
    docs = [make_doc("a", text), make_doc("b", text + "  "), make_doc("c", bbc_text("sport/002.txt"))]
    index = run(step, docs)
    assert set(index["clusters"]) == {"a", "b"}


@pytest.mark.parametrize(
    "options",
    [
        {"jaccard_threshold": 0.0},
        {"containment_threshold": 1.5},
        {"num_perm": 8},
        {"shingle_size": 0},
        {"unknown": 1},
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Deduplicator.Options.model_validate(options)


def test_build_index_rejects_signatures_of_another_num_perm(seed_docs: list[Document]) -> None:
    summary = Deduplicator(Deduplicator.Options(num_perm=64)).summarize(seed_docs[:1])[0]
    with pytest.raises(ValueError, match="expected 128"):
        Deduplicator().build_index([("000", summary)])


def test_containment_estimate_and_size_grid() -> None:
    assert estimated_containment(0.4, 40, 100) == pytest.approx(1.0)
    assert estimated_containment(0.0, 40, 100) == 0.0
    assert estimated_containment(0.2, 50, 100) == pytest.approx(0.5)
    assert [size_bucket(n) for n in (1, 20)] == [1, 20]
    assert all(n <= size_bucket(n) <= n * 1.05 + 1 for n in range(1, 5000, 37))
    assert len({size_bucket(n) for n in range(1, 100_000)}) < 250


def test_union_find_groups_transitively() -> None:
    links = UnionFind(["a", "b", "c", "d", "e"])
    assert links.union("a", "b")
    assert links.union("c", "b")
    assert not links.union("a", "c")
    links.union("d", "e")
    assert sorted(sorted(g) for g in links.groups()) == [["a", "b", "c"], ["d", "e"]]
