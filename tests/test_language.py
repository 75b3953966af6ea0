"""The `language` step: correct tags on real text, `und` when unsure, same answer every time."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.document import Document
from tasks.language import LanguageTagger

PROJECT = Path(__file__).resolve().parents[1]
SEEDS = sorted((PROJECT / "seeds").glob("*.txt"))
LANGID = Path(os.environ.get("TEXTMILL_CORPORA", PROJECT.parent / "shared" / "corpora")) / "langid"


def make_doc(text: str, doc_id: str = "d", **fields) -> Document:
    return Document(id=doc_id, path=f"{doc_id}.txt", sha256="0" * 64, text=text, **fields)


def sample(code: str, start: int = 0, sentences: int = 5) -> str:
    """`sentences` consecutive lines of the Leipzig sample for language `code`."""
    path = LANGID / f"{code}.txt"
    if not path.exists():
        pytest.skip(f"{path} not found (set TEXTMILL_CORPORA)")
    lines = path.read_text(encoding="utf-8").splitlines()
    return " ".join(lines[start : start + sentences])


@pytest.fixture(scope="module")
def tagger() -> LanguageTagger:
    step = LanguageTagger()
    step.setup()
    return step


def test_seeds_are_english(tagger: LanguageTagger) -> None:
    assert len(SEEDS) == 5
    docs = [make_doc(p.read_text(encoding="utf-8"), p.stem) for p in SEEDS]
    out = tagger.process(docs)
    assert [d.id for d in out] == [d.id for d in docs]
    for doc in out:
        assert doc.lang == "en"
        assert doc.lang_score >= 0.9
        assert doc.steps[-1].step == "language" and doc.steps[-1].version == "1"


@pytest.mark.parametrize("code", ["de", "fr", "es", "ru", "uk", "ar", "ja", "zh", "ko", "hi"])
def test_detects_languages(tagger: LanguageTagger, code: str) -> None:
    [doc] = tagger.process([make_doc(sample(code, start=10))])
    assert (doc.lang, doc.lang_score >= 0.7) == (code, True)


def test_chinese_scripts_map_to_iso_639_1(tagger: LanguageTagger) -> None:
    lang, score = tagger.detect(sample("zh", start=100))
    assert lang == "zh"
    assert score == round(score, 4)


def test_short_text_is_undetermined(tagger: LanguageTagger) -> None:
    [doc] = tagger.process([make_doc("Bonjour tout le monde")])
    assert (doc.lang, doc.lang_score) == ("und", 0.0)
    assert tagger.detect("   short  text   with   spaces   ") == ("und", 0.0)


def test_text_without_features_is_undetermined(tagger: LanguageTagger) -> None:
    assert tagger.detect("1234567890 ,.;: 0987654321 !? 1234567890") == ("und", 0.0)


def test_low_confidence_is_undetermined_with_its_score() -> None:
    strict = LanguageTagger(LanguageTagger.Options(min_score=1.0))
    mixed = sample("de", sentences=1) + " " + sample("nl", sentences=1)
    lang, score = strict.detect(mixed)
    assert lang == "und"
    assert 0.0 < score < 1.0


def test_deterministic_across_calls_instances_and_threads(tagger: LanguageTagger) -> None:
    texts = [sample(code, start=200, sentences=2) for code in ("en", "nl", "sv", "pt", "it", "cs", "pl")]
    expected = [tagger.detect(t) for t in texts]
    assert [tagger.detect(t) for t in texts] == expected
    assert [LanguageTagger().detect(t) for t in texts] == expected
    fresh = LanguageTagger()
    with ThreadPoolExecutor(max_workers=8) as pool:
        pool.map(lambda _: fresh.setup(), range(8))
        results = list(pool.map(fresh.detect, texts * 20))
    assert results == expected * 20


def test_seed_is_an_option() -> None:
    text = sample("en", start=300, sentences=3)
    assert LanguageTagger(LanguageTagger.Options(seed=7)).detect(text)[0] == "en"


def test_skipped_documents_pass_through_unchanged(tagger: LanguageTagger) -> None:
    rejected = make_doc(sample("de"), "r").reject("too short")
    duplicate = make_doc(sample("fr"), "x", status="duplicate", duplicate_of="y")
    out = tagger.process([rejected, duplicate])
    assert out[0] is rejected and out[1] is duplicate


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        LanguageTagger.Options(min_score=1.5)
    with pytest.raises(ValidationError):
        LanguageTagger.Options(min_chars=100, max_chars=50)
    with pytest.raises(ValidationError):
        LanguageTagger.Options.model_validate({"threshold": 0.5})
