"""The `language` step: tag each document with an ISO 639-1 code and the detector's probability.

Two backends. langdetect (the default) is a random walk over character n-grams, so it is only
reproducible with a fixed seed. The step owns its `DetectorFactory` (the global one is shared,
lazily built and seeded by whoever touched it last) and loads the bundled profiles in sorted
order, so the language index, and with it every result, is the same on any filesystem, process
or thread. py3langid is a naive Bayes classifier over byte n-grams: deterministic without a
seed, several times faster, and its model ships inside the wheel (nothing to download). Its
identifier is read-only once loaded, so one instance per step serves every thread.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from langdetect import PROFILES_DIRECTORY, DetectorFactory, LangDetectException
from pydantic import Field, model_validator

from textmill.tasks.base import ConfigError, DocumentStep, StepOptions
from textmill.tasks.document import Document

UNDETERMINED = "und"
# langdetect's codes are ISO 639-1 except for the two Chinese scripts, which ISO 639-1 does not split.
ISO_639_1 = {"zh-cn": "zh", "zh-tw": "zh"}
# py3langid also has ISO 639-3 labels. Varieties of a language that has an ISO 639-1 code fold
# into it (their probabilities are added up); `zxx` ("no linguistic content": digits,
# punctuation) is `und`; other 3-letter codes (e.g. `nso`, `grc`) have no ISO 639-1 code and are
# kept as they are.
PY3LANGID_TO_ISO_639_1 = {
    "arz": "ar", "ary": "ar",  # Egyptian, Moroccan Arabic
    "yue": "zh", "wuu": "zh",  # Cantonese, Wu Chinese
    "uzs": "uz",  # Southern Uzbek
    "sdh": "ku",  # Southern Kurdish
    "gug": "gn",  # Paraguayan Guarani
    "fuv": "ff",  # Nigerian Fulfulde
    "kik": "ki",  # Kikuyu (the ISO 639-3 code of ki)
    "zxx": UNDETERMINED,
}
Backend = Literal["langdetect", "py3langid"]


def load_factory(seed: int, profiles: Path = Path(PROFILES_DIRECTORY)) -> DetectorFactory:
    """A seeded factory with every bundled profile, loaded in file-name order for a stable index."""
    try:
        factory = DetectorFactory()
        factory.load_json_profile(
            [path.read_text(encoding="utf-8") for path in sorted(profiles.iterdir()) if path.is_file()]
        )
    except (OSError, LangDetectException) as exc:
        raise ConfigError(f"cannot load langdetect profiles from {profiles}: {exc}") from None
    factory.set_seed(seed)
    return factory


def load_py3langid() -> Any:
    """py3langid's bundled model with probabilities normalised to 0..1 (a softmax over languages).

    py3langid 0.4 reads its model with `from_model_file`; 0.3 named the loader `from_pickled_model`.
    """
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise ConfigError(f"[steps.language] backend 'py3langid' needs `pip install py3langid` ({exc})") from None
    loader = getattr(LanguageIdentifier, "from_model_file", None) or LanguageIdentifier.from_pickled_model
    try:
        return loader(MODEL_FILE, norm_probs=True)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"cannot load py3langid's bundled model {MODEL_FILE}: {exc}") from None


def best_language(ranked: list[tuple[str, float]], codes: dict[str, str]) -> tuple[str, float]:
    """Map codes to ISO 639-1, add up the probabilities of codes that map to one language, take the
    best (ties: the smaller code, so the answer never depends on the detector's order)."""
    merged: dict[str, float] = {}
    for lang, prob in ranked:
        code = codes.get(lang, lang)
        merged[code] = merged.get(code, 0.0) + prob
    if not merged:
        return UNDETERMINED, 0.0
    return max(sorted(merged.items()), key=lambda item: item[1])


class LanguageTagger(DocumentStep):
    """Set `lang` and `lang_score`; `und` when the text is too short or the detector unsure."""

    name: ClassVar[str] = "language"
    version: ClassVar[str] = "1"
    libraries: ClassVar[tuple[str, ...]] = ("langdetect", "py3langid")

    class Options(StepOptions):
        min_chars: int = Field(
            20, ge=0, description="Texts with fewer non-blank characters than this are tagged 'und'."
        )
        min_score: float = Field(
            0.7, ge=0.0, le=1.0, description="Tag 'und' when the best language's probability is below this."
        )
        max_chars: int = Field(
            5000, ge=1,
            description="Detect on this many leading characters only: longer prefixes add time, not accuracy.",
        )
        backend: Backend = Field(
            "langdetect",
            description="Detector: 'langdetect' (default), or 'py3langid', several times faster, deterministic "
            "without a seed, its model shipped inside the wheel (no download).",
        )
        seed: int = Field(
            0, ge=0,
            description="Seed of langdetect's random walk, fixed for reproducible results (langdetect only; "
            "py3langid is deterministic).",
        )

        @model_validator(mode="after")
        def _prefix_holds_min_chars(self) -> LanguageTagger.Options:
            if self.max_chars < self.min_chars:
                raise ValueError(f"max_chars ({self.max_chars}) must be at least min_chars ({self.min_chars})")
            return self

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        super().__init__(options, config_dir)
        self._factory: DetectorFactory | None = None
        self._identifier: Any = None
        self._lock = threading.Lock()

    def library_names(self) -> tuple[str, ...]:
        """Only the backend in use: upgrading the other one changes nothing here."""
        return (self.options.backend,)

    @property
    def _ready(self) -> bool:
        return (self._identifier if self.options.backend == "py3langid" else self._factory) is not None

    def setup(self) -> None:
        """Load the configured backend's model once; safe to call from several threads at the same time."""
        with self._lock:
            if self._ready:
                return
            if self.options.backend == "py3langid":
                self._identifier = load_py3langid()
            else:
                self._factory = load_factory(self.options.seed)

    def process(self, docs: list[Document]) -> list[Document]:
        """Tag each accepted document; others pass through unchanged."""
        if not self._ready:
            self.setup()
        return [self._tag(doc) if self.accepts(doc) else doc for doc in docs]

    def detect(self, text: str) -> tuple[str, float]:
        """`(ISO 639-1 code or 'und', probability rounded to 4 places)` for `text`."""
        if not self._ready:
            self.setup()
        options = self.options
        if len("".join(text.split())) < options.min_chars:
            return UNDETERMINED, 0.0
        prefix = text[: options.max_chars]
        if options.backend == "py3langid":
            lang, prob = best_language(self._identifier.rank(prefix), PY3LANGID_TO_ISO_639_1)
        else:
            lang, prob = self._langdetect(prefix)
        if lang == UNDETERMINED:  # no features, or py3langid's "no linguistic content"
            return UNDETERMINED, 0.0
        score = round(prob, 4)
        if prob < options.min_score:
            return UNDETERMINED, score
        return lang, score

    def _langdetect(self, text: str) -> tuple[str, float]:
        """langdetect's best language; zh-cn and zh-tw split one language's probability, so add them up."""
        assert self._factory is not None
        # A fresh Detector per call: it holds the text and its own seeded Random, nothing shared.
        detector = self._factory.create()
        detector.append(text)
        try:
            ranked = detector.get_probabilities()
        except LangDetectException:
            return UNDETERMINED, 0.0
        return best_language([(c.lang, c.prob) for c in ranked], ISO_639_1)

    def _tag(self, doc: Document) -> Document:
        lang, score = self.detect(doc.text)
        return self.stamp(doc, lang=lang, lang_score=score)
