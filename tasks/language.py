"""The `language` step: tag each document with an ISO 639-1 code and langdetect's probability.

langdetect is a random walk over character n-grams, so it is only reproducible with a fixed
seed. The step owns its `DetectorFactory` (the global one is shared, lazily built and seeded by
whoever touched it last) and loads the bundled profiles in sorted order, so the language index,
and with it every result, is the same on any filesystem, process or thread.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

from langdetect import PROFILES_DIRECTORY, DetectorFactory, LangDetectException
from pydantic import Field, model_validator

from tasks.base import ConfigError, DocumentStep, StepOptions
from tasks.document import Document

UNDETERMINED = "und"
# langdetect's codes are ISO 639-1 except for the two Chinese scripts, which ISO 639-1 does not split.
ISO_639_1 = {"zh-cn": "zh", "zh-tw": "zh"}


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


class LanguageTagger(DocumentStep):
    """Set `lang` and `lang_score`; `und` when the text is too short or the detector unsure."""

    name: ClassVar[str] = "language"
    version: ClassVar[str] = "1"

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
        seed: int = Field(0, ge=0, description="Seed of langdetect's random walk; fixed for reproducible results.")

        @model_validator(mode="after")
        def _prefix_holds_min_chars(self) -> LanguageTagger.Options:
            if self.max_chars < self.min_chars:
                raise ValueError(f"max_chars ({self.max_chars}) must be at least min_chars ({self.min_chars})")
            return self

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        super().__init__(options, config_dir)
        self._factory: DetectorFactory | None = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load the profiles once; safe to call from several threads at the same time."""
        with self._lock:
            if self._factory is None:
                self._factory = load_factory(self.options.seed)

    def process(self, docs: list[Document]) -> list[Document]:
        """Tag each accepted document; others pass through unchanged."""
        if self._factory is None:
            self.setup()
        return [self._tag(doc) if self.accepts(doc) else doc for doc in docs]

    def detect(self, text: str) -> tuple[str, float]:
        """`(ISO 639-1 code or 'und', probability rounded to 4 places)` for `text`."""
        if self._factory is None:
            self.setup()
        assert self._factory is not None
        options = self.options
        if len("".join(text.split())) < options.min_chars:
            return UNDETERMINED, 0.0
        # A fresh Detector per call: it holds the text and its own seeded Random, nothing shared.
        detector = self._factory.create()
        detector.append(text[: options.max_chars])
        try:
            ranked = detector.get_probabilities()
        except LangDetectException:
            return UNDETERMINED, 0.0
        # zh-cn and zh-tw split one language's probability between them: add them up.
        merged: dict[str, float] = {}
        for candidate in ranked:
            code = ISO_639_1.get(candidate.lang, candidate.lang)
            merged[code] = merged.get(code, 0.0) + candidate.prob
        if not merged:
            return UNDETERMINED, 0.0
        lang, prob = max(sorted(merged.items()), key=lambda item: item[1])
        score = round(prob, 4)
        if prob < options.min_score:
            return UNDETERMINED, score
        return lang, score

    def _tag(self, doc: Document) -> Document:
        lang, score = self.detect(doc.text)
        return self.stamp(doc, lang=lang, lang_score=score)
