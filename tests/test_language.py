"""The `language` step: correct tags on real text, `und` when unsure, same answer every time."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import shared_path
from textmill.tasks.document import Document
from textmill.tasks.language import LanguageTagger

PROJECT = Path(__file__).resolve().parents[1]
SEEDS = sorted((PROJECT / "seeds").glob("*.txt"))


def make_doc(text: str, doc_id: str = "d", **fields) -> Document:
    return Document(id=doc_id, path=f"{doc_id}.txt", sha256="0" * 64, text=text, **fields)


def sample(code: str, start: int = 0, sentences: int = 5) -> str:
    """`sentences` consecutive lines of the Leipzig sample for language `code`."""
    path = shared_path("corpora", "langid", f"{code}.txt")
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


# --- the py3langid backend -------------------------------------------------------------------

SENTENCES = {
    "en": "The committee will publish its final report on the new railway line next spring.",
    "fr": "Le comité publiera son rapport final sur la nouvelle ligne de chemin de fer au printemps prochain.",
    "de": "Der Ausschuss wird seinen Abschlussbericht über die neue Bahnstrecke im nächsten Frühjahr veröffentlichen.",
    "ru": "Комитет опубликует свой окончательный доклад о новой железнодорожной линии следующей весной.",
}


@pytest.fixture(scope="module")
def fast_tagger() -> LanguageTagger:
    step = LanguageTagger(LanguageTagger.Options(backend="py3langid"))
    step.setup()
    return step


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_py3langid_detects_single_sentences(fast_tagger: LanguageTagger, code: str) -> None:
    [doc] = fast_tagger.process([make_doc(SENTENCES[code])])
    assert doc.lang == code
    assert 0.7 <= doc.lang_score <= 1.0
    assert doc.lang_score == round(doc.lang_score, 4)


@pytest.mark.parametrize("code", ["es", "uk", "ar", "ja", "zh", "ko", "hi"])
def test_py3langid_detects_corpus_paragraphs(fast_tagger: LanguageTagger, code: str) -> None:
    assert fast_tagger.detect(sample(code, start=10))[0] == code


def test_py3langid_short_or_featureless_text_is_undetermined(fast_tagger: LanguageTagger) -> None:
    [doc] = fast_tagger.process([make_doc("Bonjour tout le monde")])
    assert (doc.lang, doc.lang_score) == ("und", 0.0)
    assert fast_tagger.detect("") == ("und", 0.0)
    assert fast_tagger.detect("1234567890 ,.;: 0987654321 !? 1234567890") == ("und", 0.0)


def test_py3langid_low_confidence_is_undetermined_with_its_score() -> None:
    strict = LanguageTagger(LanguageTagger.Options(backend="py3langid", min_score=1.0))
    lang, score = strict.detect(SENTENCES["de"][:40] + " " + SENTENCES["fr"][:40])
    assert lang == "und"
    assert 0.0 < score < 1.0


def test_py3langid_is_deterministic_across_instances_and_threads(fast_tagger: LanguageTagger) -> None:
    texts = [sample(code, start=200, sentences=1) for code in ("en", "nl", "sv", "pt", "it", "cs", "pl")]
    texts += list(SENTENCES.values())
    expected = [fast_tagger.detect(t) for t in texts]
    other = LanguageTagger(LanguageTagger.Options(backend="py3langid"))
    assert [other.detect(t) for t in texts] == expected
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(other.detect, texts * 10)) == expected * 10


def test_backend_is_an_option_validated_against_the_choices() -> None:
    assert LanguageTagger.Options().backend == "langdetect"
    with pytest.raises(ValidationError, match=r"'langdetect' or 'py3langid'"):
        LanguageTagger.Options.model_validate({"backend": "fasttext"})


def test_unknown_backend_is_a_config_error_naming_the_choices() -> None:
    from textmill.tasks.base import ConfigError
    from textmill.tasks.registry import build_step, load_registry

    with pytest.raises(ConfigError, match=r"backend.*'langdetect' or 'py3langid'.*fasttext"):
        build_step("language", {"backend": "fasttext"}, load_registry(), PROJECT / "config")


def test_backend_changes_the_fingerprint() -> None:
    slow = LanguageTagger()
    fast = LanguageTagger(LanguageTagger.Options(backend="py3langid"))
    assert slow.fingerprint() != fast.fingerprint()
    assert slow.options_hash() != fast.options_hash()
