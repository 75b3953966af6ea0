"""Language detectors behind the `language` step, one class per backend, each answering
`(ISO code or 'und', score in 0..1)` for a text.

- langdetect: a random walk over character n-grams for 55 languages, reproducible only with a
  fixed seed; the detector owns its `DetectorFactory` and loads the bundled profiles in sorted
  order, so every result is the same on any filesystem, process or thread.
- py3langid: naive Bayes over byte n-grams, 142 labels (most African-news languages included),
  deterministic, its model inside the wheel; about 120 MB per process.
- heliport: HeLI-OTS in Rust, about 220 languages, with per-language confidence thresholds
  calibrated by its authors and shipped with the model (below its threshold a text is `und`);
  fast, but its model takes about 850 MB per process.
- heliport+py3langid (`Consensus`): both, and a rule for when they disagree. Each knows languages
  the other does not (py3langid: Hausa, Xhosa, Nigerian Pidgin; heliport: Tigrinya), and each
  confidently names its nearest known language for the rest (heliport calls Pidgin English and
  Xhosa Zulu; py3langid calls Tigrinya Amharic). `Consensus.decide` trusts an answer the other
  detector could not have given, and refuses to choose between two answers both could have given.

Scores: langdetect and py3langid give probabilities; heliport's confidence is the runner-up's
score minus the best's in log10 units per n-gram, mapped to `1 - 10**-confidence`.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from langdetect import PROFILES_DIRECTORY, DetectorFactory, LangDetectException

from textmill.tasks.base import ConfigError
from textmill.tasks.language_codes import UNDETERMINED, iso_code

# heliport's mean n-gram score (lower is better) above which its best language explains the text
# badly: real text in a language it knows scored 2.8-4.9 on development data (langid paragraphs,
# masakhanews-dev, BBC), text in languages it lacks 3.8-6.1. Only used to prefer py3langid's
# answer in a disagreement, never to name a language.
HELIPORT_POOR_FIT = 5.0


class Detector(Protocol):
    """What the step asks of a backend."""

    languages: frozenset[str]

    def detect(self, text: str) -> tuple[str, float]:
        """`(ISO code or 'und', score in 0..1)`; `und` when the detector itself is unsure."""


def best_language(ranked: list[tuple[str, float]]) -> tuple[str, float]:
    """Map codes to ISO, add up the probabilities of codes that map to one language, take the
    best (ties: the smaller code, so the answer never depends on the detector's order)."""
    merged: dict[str, float] = {}
    for lang, prob in ranked:
        code = iso_code(lang)
        merged[code] = merged.get(code, 0.0) + prob
    if not merged:
        return UNDETERMINED, 0.0
    return max(sorted(merged.items()), key=lambda item: item[1])


def unsure(lang: str, prob: float, min_score: float) -> tuple[str, float]:
    """`und` with its score below `min_score`; no features at all is `('und', 0.0)`."""
    if lang == UNDETERMINED:
        return UNDETERMINED, 0.0
    return (lang if prob >= min_score else UNDETERMINED), prob


class Langdetect:
    """langdetect with its own seeded factory."""

    def __init__(self, seed: int, min_score: float, profiles: Path = Path(PROFILES_DIRECTORY)) -> None:
        try:
            factory = DetectorFactory()
            factory.load_json_profile(
                [path.read_text(encoding="utf-8") for path in sorted(profiles.iterdir()) if path.is_file()]
            )
        except (OSError, LangDetectException) as exc:
            raise ConfigError(f"cannot load langdetect profiles from {profiles}: {exc}") from None
        factory.set_seed(seed)
        self._factory = factory
        self.min_score = min_score
        self.languages = frozenset(iso_code(lang) for lang in factory.get_lang_list())

    def detect(self, text: str) -> tuple[str, float]:
        # A fresh Detector per call: it holds the text and its own seeded Random, nothing shared.
        detector = self._factory.create()
        detector.append(text)
        try:
            ranked = detector.get_probabilities()
        except LangDetectException:
            return UNDETERMINED, 0.0
        return unsure(*best_language([(c.lang, c.prob) for c in ranked]), self.min_score)


class Py3langid:
    """py3langid's bundled model with probabilities normalised to 0..1 (a softmax over languages);
    read-only once loaded, so one instance serves every thread."""

    def __init__(self, min_score: float) -> None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError as exc:
            raise ConfigError(f"[steps.language] backend 'py3langid' needs `pip install py3langid` ({exc})") from None
        # py3langid 0.4 reads its model with `from_model_file`; 0.3 named the loader `from_pickled_model`.
        loader = getattr(LanguageIdentifier, "from_model_file", None) or LanguageIdentifier.from_pickled_model
        try:
            self._identifier: Any = loader(MODEL_FILE, norm_probs=True)
        except (OSError, ValueError, EOFError) as exc:
            raise ConfigError(f"cannot load py3langid's bundled model {MODEL_FILE}: {exc}") from None
        self.min_score = min_score
        self.languages = frozenset(iso_code(lang) for lang in self._identifier.nb_classes) - {UNDETERMINED}

    def detect(self, text: str) -> tuple[str, float]:
        return unsure(*best_language(self._identifier.rank(text)), self.min_score)


class Heliport:
    """heliport with its bundled per-language confidence thresholds."""

    def __init__(self) -> None:
        try:
            import heliport
        except ImportError as exc:
            raise ConfigError(f"[steps.language] backend 'heliport' needs `pip install heliport` ({exc})") from None
        try:
            self._identifier: Any = heliport.Identifier()
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load heliport's bundled model: {exc}") from None
        self.languages = frozenset(iso_code(lang) for lang in self._identifier.get_confidence_all()) - {UNDETERMINED}

    def fit(self, text: str) -> float:
        """The best language's mean n-gram score: lower is a better fit (`HELIPORT_POOR_FIT`)."""
        top = self._identifier.identify_topk_with_score(text, 1)
        return float(top[0][1]) if top else float("inf")

    def detect(self, text: str) -> tuple[str, float]:
        lang, confidence = self._identifier.identify_with_score(text)
        code = iso_code(lang)
        if code == UNDETERMINED and lang != UNDETERMINED:
            return UNDETERMINED, 0.0  # "no linguistic content" (digits, punctuation) or markup
        return code, max(0.0, 1.0 - 10.0 ** -float(confidence))


class Consensus:
    """heliport and py3langid together (see the module docstring)."""

    def __init__(self, min_score: float) -> None:
        self.heliport = Heliport()
        self.py3langid = Py3langid(min_score)
        self.languages = self.heliport.languages | self.py3langid.languages

    def detect(self, text: str) -> tuple[str, float]:
        h, h_score = self.heliport.detect(text)
        p, p_score = self.py3langid.detect(text)
        # heliport scores the text a second time only when the answers disagree, and at most once.
        lang = self.decide(h, p, cache(lambda: self.heliport.fit(text)))
        if lang == UNDETERMINED:
            return UNDETERMINED, max(h_score, p_score)
        return lang, (p_score if lang == p else h_score)

    def decide(self, h: str, p: str, fit: Callable[[], float]) -> str:
        """The answer from heliport's `h` and py3langid's `p` (`fit()`: heliport's fit score)."""
        if h == p:
            return h
        if p != UNDETERMINED and p not in self.heliport.languages:
            return p  # heliport could not have said it: e.g. Hausa, Xhosa, Nigerian Pidgin
        if h != UNDETERMINED and h not in self.py3langid.languages and fit() < HELIPORT_POOR_FIT:
            return h  # py3langid could not have said it: e.g. Tigrinya
        if p != UNDETERMINED and (h == UNDETERMINED or fit() >= HELIPORT_POOR_FIT):
            return p  # heliport unsure, or its best language explains the text badly
        if p == UNDETERMINED and h != UNDETERMINED and fit() < HELIPORT_POOR_FIT:
            return h  # py3langid unsure (short texts), heliport sure and fitting
        return UNDETERMINED  # two answers, each one the other could have given
