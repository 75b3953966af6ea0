"""Corpus evidence for entity labels: articles, one label per name per document, the last name
of a person, the gazetteer, and a name's majority label over the corpus."""
from __future__ import annotations

from pathlib import Path

import pytest

from textmill.tasks.base import ConfigError
from textmill.tasks.document import Document
from textmill.tasks.entities import EntityExtractor
from textmill.tasks.entity_evidence import Gazetteer, consistent_spans, strip_article


def at(text: str, name: str, label: str, nth: int = 0) -> list:
    """The span of the `nth` occurrence of `name` in `text`."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(name, start + 1)
    return [start, start + len(name), label, name]


def test_a_leading_article_is_not_part_of_a_name() -> None:
    assert strip_article([10, 27, "GPE", "the United States"]) == [14, 27, "GPE", "United States"]
    assert strip_article([0, 9, "ORG", "The Times"]) == [4, 9, "ORG", "Times"]
    assert strip_article([0, 3, "ORG", "The"]) == [0, 3, "ORG", "The"]
    assert strip_article([0, 8, "GPE", "Thailand"]) == [0, 8, "GPE", "Thailand"]


def test_one_label_per_name_in_a_document_by_majority() -> None:
    text = "Lebed said on Monday. Lebed met Yeltsin. Aides to Lebed denied it."
    spans = [at(text, "Lebed", "PERSON"), at(text, "Lebed", "ORG", 1), at(text, "Lebed", "PERSON", 2),
             at(text, "Yeltsin", "PERSON")]
    assert [s[2] for s in consistent_spans(text, spans)] == ["PERSON", "PERSON", "PERSON", "PERSON"]


def test_missed_capitalised_mentions_are_tagged_lowercase_words_are_not() -> None:
    text = "LEICESTERSHIRE TAKE OVER. Leicestershire beat Somerset. The leicestershire pie."
    spans = [at(text, "Leicestershire", "ORG"), at(text, "Somerset", "ORG")]
    out = consistent_spans(text, spans)
    assert [(s[3], s[2]) for s in out] == [("LEICESTERSHIRE", "ORG"), ("Leicestershire", "ORG"), ("Somerset", "ORG")]
    assert all(text[s:e] == t for s, e, _, t in out)


def test_the_last_name_of_a_person_is_that_person() -> None:
    text = "Phil Simmons took four wickets. Simmons then batted. Wang beat Simmons."
    spans = [at(text, "Phil Simmons", "PERSON"), at(text, "Simmons", "ORG", 1), at(text, "Wang", "PERSON")]
    out = consistent_spans(text, spans)
    assert [(s[3], s[2]) for s in out] == [
        ("Phil Simmons", "PERSON"), ("Simmons", "PERSON"), ("Wang", "PERSON"), ("Simmons", "PERSON")
    ]


def test_gazetteer_names_win_and_keep_their_label(tmp_path: Path) -> None:
    path = tmp_path / "names.toml"
    path.write_text('[[name]]\ntext = "Surrey"\nlabel = "ORG"\n\n[[name]]\ntext = "Old  Trafford"\nlabel = "FAC"\n')
    gazetteer = Gazetteer.load(path)
    assert gazetteer.names == (("Old Trafford", "FAC"), ("Surrey", "ORG"))
    text = "Surrey won at Old Trafford. Surrey County Council met."
    spans = [at(text, "Surrey", "GPE"), at(text, "Old", "PERSON"), at(text, "Surrey County Council", "ORG")]
    out = gazetteer.apply(text, spans)
    assert [(s[3], s[2]) for s in out] == [
        ("Surrey", "ORG"), ("Old Trafford", "FAC"), ("Surrey County Council", "ORG")
    ]
    two_to_one = [at(text, "Surrey", "GPE"), at(text, "Surrey", "GPE", 1), at(text, "Trafford", "ORG")]
    fixed = consistent_spans(text, two_to_one + [[14, 17, "ORG", "Old"]], fixed=gazetteer.labels)
    assert [(s[3], s[2]) for s in fixed] == [("Surrey", "ORG"), ("Old", "ORG"), ("Trafford", "ORG"), ("Surrey", "ORG")]


@pytest.mark.parametrize(
    ("content", "message"),
    [("[[name]]\ntext = 'X'\n", "needs a non-empty 'text' and 'label'"), ("name = 3\n", "array of tables"),
     ("[[name]\n", "cannot read gazetteer")],
)
def test_a_bad_gazetteer_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Gazetteer.load(path)


def test_editing_the_gazetteer_changes_the_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "names.toml"
    path.write_text('[[name]]\ntext = "Surrey"\nlabel = "ORG"\n')
    step = EntityExtractor(EntityExtractor.Options(gazetteer="names.toml"), config_dir=tmp_path)
    before = step.fingerprint()
    path.write_text('[[name]]\ntext = "Surrey"\nlabel = "GPE"\n')
    assert EntityExtractor(EntityExtractor.Options(gazetteer="names.toml"), config_dir=tmp_path).fingerprint() != before
    with pytest.raises(ConfigError, match="gazetteer"):
        EntityExtractor(EntityExtractor.Options(gazetteer="missing.toml"), config_dir=tmp_path).fingerprint()


def summary(*mentions: tuple[str, str]) -> dict:
    return {"spans": [[0, len(text), label, text] for label, text in mentions]}


def test_a_names_label_is_its_majority_over_documents_and_shards(tmp_path: Path) -> None:
    step = EntityExtractor()
    pairs = [
        ("a", summary(("ORG", "Cofinec"), ("ORG", "Cofinec"), ("ORG", "Cofinec"))),  # one document, one vote
        ("b", summary(("PERSON", "Cofinec"))),
        ("c", summary(("PERSON", "Cofinec's"), ("GPE", "Hungary"))),
    ]
    index = step.build_index(pairs)
    assert index["labels"] == {"cofinec": "PERSON"}
    decision = step.decide(index, "a", pairs[0][1])
    assert decision["labels"] == {"cofinec": "PERSON"}
    doc = Document(id="a", path="a.txt", sha256="0" * 64, text="Cofinec", lang="en")
    entities = step.apply(doc, pairs[0][1], decision).entities
    assert {(e.label, e.canonical) for e in entities} == {("PERSON", "Cofinec")}
    shards = []
    for n, shard in enumerate((pairs[:1], pairs[1:])):
        folder = tmp_path / f"shard{n}"
        folder.mkdir()
        step.spill(shard, folder, 1)
        shards.append(folder)
    assert step.reduce(0, shards, tmp_path) == index
    assert EntityExtractor(EntityExtractor.Options(corpus_labels=False)).build_index(pairs)["labels"] == {}


def test_a_relabelled_entity_outside_the_wanted_labels_is_dropped() -> None:
    step = EntityExtractor(EntityExtractor.Options(labels=["ORG"]))
    pairs = [("a", summary(("ORG", "Wang"))), ("b", summary(("PERSON", "Wang"))), ("c", summary(("PERSON", "Wang")))]
    index = EntityExtractor().build_index(pairs)
    doc = Document(id="a", path="a.txt", sha256="0" * 64, text="Wang", lang="en")
    assert step.apply(doc, pairs[0][1], step.decide(index, "a", pairs[0][1])).entities == ()
