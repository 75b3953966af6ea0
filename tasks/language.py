"""The `language` step: tag each document with an ISO language code and the detector's score.

The detectors are in `language_detectors`, the codes and the script check in `language_codes`.
The default, heliport and py3langid together, was the most accurate on every development set
(`python -m bench.quality language`, docs/benchmarks.md) and knows when it does not know: a
document is `und` when it is too short, when the detector is unsure, when its letters are in a
script the named language is not written in, or when the named language is one the detector
cannot tell from a neighbour it lacks (`exclude`).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from textmill.tasks.base import DocumentStep, StepOptions
from textmill.tasks.document import Document
from textmill.tasks.language_codes import UNDETERMINED, dominant_script, iso_code, written_in
from textmill.tasks.language_detectors import Consensus, Detector, Heliport, Langdetect, Py3langid

Backend = Literal["heliport+py3langid", "heliport", "py3langid", "langdetect"]
# Libraries each backend's results depend on (the step's fingerprint names their versions).
BACKEND_LIBRARIES: dict[str, tuple[str, ...]] = {
    "heliport+py3langid": ("heliport", "py3langid"),
    "heliport": ("heliport",),
    "py3langid": ("py3langid",),
    "langdetect": ("langdetect",),
}
# On masakhanews-dev py3langid names every Kirundi article Kinyarwanda, at probabilities of
# 0.9998 and more, and no backend knows Kirundi: a `rw` answer cannot be trusted.
DEFAULT_EXCLUDE = ("rw",)


class LanguageTagger(DocumentStep):
    """Set `lang` and `lang_score`; `und` when the text is too short, the detector unsure, the
    script wrong for the language, or the language excluded."""

    name: ClassVar[str] = "language"
    version: ClassVar[str] = "2"
    libraries: ClassVar[tuple[str, ...]] = ("heliport", "py3langid", "langdetect", "iso639-lang", "langcodes")
    # Read-only models; heliport's loading threads have ended by the time its constructor returns.
    setup_before_fork: ClassVar[bool] = True

    class Options(StepOptions):
        min_chars: int = Field(
            20, ge=0, description="Texts with fewer non-blank characters than this are tagged 'und'."
        )
        min_score: float = Field(
            0.7, ge=0.0, le=1.0,
            description="Tag 'und' when langdetect's or py3langid's probability of the best language is below "
            "this; heliport applies its own per-language thresholds, shipped with its model.",
        )
        max_chars: int = Field(
            5000, ge=1,
            description="Detect on this many leading characters only: longer prefixes add time, not accuracy.",
        )
        backend: Backend = Field(
            "heliport+py3langid",
            description="Detector: 'heliport+py3langid' (default: both, 'und' when they disagree and neither "
            "knows better), 'heliport' (about 220 languages), 'py3langid' (142 labels, the smallest "
            "model) or 'langdetect' (55 languages, the slowest). Every model ships inside its wheel.",
        )
        seed: int = Field(
            0, ge=0,
            description="Seed of langdetect's random walk, fixed for reproducible results (langdetect only; "
            "the others are deterministic).",
        )
        exclude: list[str] = Field(
            list(DEFAULT_EXCLUDE),
            description="Languages never named (tagged 'und' instead): ones the detector confuses with a "
            "neighbour it does not know. Default ['rw']: py3langid calls Kirundi Kinyarwanda.",
        )
        script_check: bool = Field(
            True, description="Tag 'und' when the text's letters are in a script the named language is not written in."
        )

        @model_validator(mode="after")
        def _prefix_holds_min_chars(self) -> LanguageTagger.Options:
            if self.max_chars < self.min_chars:
                raise ValueError(f"max_chars ({self.max_chars}) must be at least min_chars ({self.min_chars})")
            return self

        @field_validator("exclude")
        @classmethod
        def _exclude_as_iso_codes(cls, codes: list[str]) -> list[str]:
            return sorted({iso_code(code) for code in codes})

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        super().__init__(options, config_dir)
        self._detector: Detector | None = None
        self._lock = threading.Lock()

    def library_names(self) -> tuple[str, ...]:
        """The backend in use and the code tables: upgrading another backend changes nothing here."""
        return BACKEND_LIBRARIES[self.options.backend] + ("iso639-lang", "langcodes")

    @property
    def languages(self) -> frozenset[str]:
        """Codes the configured detector can name (before `exclude`)."""
        return self.detector().languages

    def detector(self) -> Detector:
        """The configured backend, loaded once; safe to call from several threads at the same time."""
        with self._lock:
            if self._detector is None:
                options = self.options
                if options.backend == "heliport+py3langid":
                    self._detector = Consensus(options.min_score)
                elif options.backend == "heliport":
                    self._detector = Heliport()
                elif options.backend == "py3langid":
                    self._detector = Py3langid(options.min_score)
                else:
                    self._detector = Langdetect(options.seed, options.min_score)
            return self._detector

    def setup(self) -> None:
        """Load the configured backend's model once."""
        self.detector()

    def process(self, docs: list[Document]) -> list[Document]:
        """Tag each accepted document; others pass through unchanged."""
        detector = self.detector()
        return [self._tag(doc, detector) if self.accepts(doc) else doc for doc in docs]

    def detect(self, text: str) -> tuple[str, float]:
        """`(ISO code or 'und', score rounded to 4 places)` for `text`."""
        return self._detect(text, self.detector())

    def _detect(self, text: str, detector: Detector) -> tuple[str, float]:
        options = self.options
        if len("".join(text.split())) < options.min_chars:
            return UNDETERMINED, 0.0
        prefix = text[: options.max_chars]
        lang, score = detector.detect(prefix)
        score = round(score, 4)
        if lang == UNDETERMINED or lang in options.exclude:
            return UNDETERMINED, score
        if options.script_check and not written_in(lang, dominant_script(prefix)):
            return UNDETERMINED, score
        return lang, score

    def _tag(self, doc: Document, detector: Detector) -> Document:
        lang, score = self._detect(doc.text, detector)
        return self.stamp(doc, lang=lang, lang_score=score)
