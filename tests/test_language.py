"""The `language` step: correct tags on real text, `und` when unsure, same answer every time."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import shared_path
from textmill.tasks.document import Document
from textmill.tasks.language import LanguageTagger
from textmill.tasks.language_codes import dominant_script, iso_code, written_in

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
        assert doc.steps[-1].step == "language" and doc.steps[-1].version == "2"


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
    strict = LanguageTagger(LanguageTagger.Options(backend="langdetect", min_score=1.0))
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
    assert LanguageTagger(LanguageTagger.Options(backend="langdetect", seed=7)).detect(text)[0] == "en"


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
    assert LanguageTagger.Options().backend == "heliport+py3langid"
    with pytest.raises(ValidationError, match=r"'heliport\+py3langid', 'heliport', 'py3langid' or 'langdetect'"):
        LanguageTagger.Options.model_validate({"backend": "fasttext"})


def test_unknown_backend_is_a_config_error_naming_the_choices() -> None:
    from textmill.tasks.base import ConfigError
    from textmill.tasks.registry import build_step, load_registry

    with pytest.raises(ConfigError, match=r"backend.*'py3langid' or 'langdetect'.*fasttext"):
        build_step("language", {"backend": "fasttext"}, load_registry(), PROJECT / "config")


def test_backend_changes_the_fingerprint() -> None:
    slow = LanguageTagger(LanguageTagger.Options(backend="langdetect"))
    fast = LanguageTagger(LanguageTagger.Options(backend="py3langid"))
    assert slow.fingerprint() != fast.fingerprint()
    assert slow.options_hash() != fast.options_hash()


# --- languages outside a detector's list, codes, scripts ---------------------------------------


def articles(code: str, count: int = 4) -> list[str]:
    """The first `count` masakhanews-dev articles in ISO 639-3 language `code`."""
    path = shared_path("corpora", "masakhanews-dev", "dev-sample.jsonl")
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and json.loads(line)["lang"] == code]
    return texts[:count]


@pytest.mark.parametrize(
    ("code", "expected"),
    [("hau", "ha"), ("xho", "xh"), ("pcm", "pcm"), ("tir", "ti"), ("amh", "am"), ("orm", "om"),
     ("yor", "yo"), ("eng", "en"), ("run", "und")],
)
def test_african_news_is_named_right_or_und(tagger: LanguageTagger, code: str, expected: str) -> None:
    """Each detector alone gets some of these wrong with confidence (heliport: Pidgin is English,
    Xhosa is Zulu; py3langid: Tigrinya is Amharic, Kirundi is Kinyarwanda); the default does not."""
    docs = tagger.process([make_doc(text, f"{code}{i}") for i, text in enumerate(articles(code))])
    assert [doc.lang for doc in docs] == [expected] * len(docs)


def test_each_detector_alone_names_a_neighbour(tagger: LanguageTagger) -> None:
    """Why the default is two detectors: the single ones are confidently wrong on these."""
    heliport = LanguageTagger(LanguageTagger.Options(backend="heliport"))
    py3langid = LanguageTagger(LanguageTagger.Options(backend="py3langid", exclude=[]))
    assert heliport.detect(articles("pcm", 1)[0])[0] == "en"
    assert heliport.detect(articles("xho", 1)[0])[0] == "zu"
    assert py3langid.detect(articles("tir", 1)[0])[0] == "am"
    assert py3langid.detect(articles("run", 1)[0])[0] == "rw"


def test_excluded_languages_are_und_and_exclude_is_an_option() -> None:
    kirundi = articles("run", 1)[0]
    assert LanguageTagger(LanguageTagger.Options(backend="py3langid")).detect(kirundi)[0] == "und"
    assert LanguageTagger(LanguageTagger.Options(backend="py3langid", exclude=[])).detect(kirundi)[0] == "rw"
    assert LanguageTagger.Options(exclude=["kin", "gaz"]).exclude == ["om", "rw"]
    assert LanguageTagger().fingerprint() != LanguageTagger(LanguageTagger.Options(exclude=[])).fingerprint()


@pytest.mark.parametrize(
    ("code", "iso"),
    [("eng", "en"), ("gaz", "om"), ("orm", "om"), ("cmn", "zh"), ("zh-cn", "zh"), ("arz", "ar"),
     ("swh", "sw"), ("pes", "fa"), ("nob", "nb"), ("ind", "id"), ("hbsbos", "bs"), ("fini", "fi"),
     ("pcm", "pcm"), ("run", "rn"), ("zxx", "und"), ("EN", "en"), ("qqq", "qqq")],
)
def test_codes_are_iso_639_1_else_639_3_with_members_folded(code: str, iso: str) -> None:
    assert iso_code(code) == iso


class AlwaysEnglish:
    """A detector that names English whatever the text: the fault the script check catches."""

    languages = frozenset({"en"})

    def detect(self, text: str) -> tuple[str, float]:
        return "en", 0.99


def test_a_language_in_the_wrong_script_is_und() -> None:
    amharic = articles("amh", 1)[0]
    checked = LanguageTagger()
    checked._detector = AlwaysEnglish()
    assert checked.detect(amharic) == ("und", 0.99)
    assert checked.detect(sample("en")) == ("en", 0.99)
    unchecked = LanguageTagger(LanguageTagger.Options(script_check=False))
    unchecked._detector = AlwaysEnglish()
    assert unchecked.detect(amharic) == ("en", 0.99)


@pytest.mark.parametrize(
    ("text", "script"),
    [("ሰላም ለዓለም hello", "Ethi"), ("Привет, мир", "Cyrl"), ("これは日本語です", "Hira"), ("123 !?", None)],
)
def test_dominant_script(text: str, script: str | None) -> None:
    assert dominant_script(text) == script


def test_scripts_of_languages() -> None:
    assert written_in("ja", "Hira") and written_in("ja", "Hani") and written_in("ko", "Hang")
    assert written_in("sr", "Latn") and written_in("sr", "Cyrl")
    assert not written_in("en", "Cyrl") and not written_in("am", "Latn") and not written_in("ru", "Latn")
    assert written_in("qqq", "Latn") and written_in("en", None)
