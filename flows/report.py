"""Run statistics, the manifest, and the Prefect artifacts that summarise a run."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textmill.tasks.atomic import write_atomic
from textmill.tasks.document import Document

TOP_ENTITIES = 10
TOP_CLUSTERS = 5
# Numbers, dates and amounts are entities to spaCy but say nothing about what a corpus is about.
UNNAMED_LABELS = frozenset({"CARDINAL", "ORDINAL", "DATE", "TIME", "PERCENT", "MONEY", "QUANTITY"})


@dataclass
class StageStats:
    """Per step: documents computed, served from cache, skipped, updated, and seconds.

    `skipped` documents were not `ok` when the step ran (rejected or duplicate); `updated`
    records of a corpus step were rewritten only because a corpus-wide decision changed.
    """

    computed: int = 0
    cached: int = 0
    skipped: int = 0
    updated: int = 0
    seconds: float = 0.0


@dataclass
class CorpusStats:
    """Counts over the final records."""

    documents: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    entities: int = 0
    top_entities: list[tuple[str, str, int]] = field(default_factory=list)
    clusters: int = 0
    largest_clusters: list[tuple[str, int]] = field(default_factory=list)
    non_utf8: int = 0
    encoding_uncertain: int = 0


class StatsCollector:
    """Gathers CorpusStats while the final records stream to the sinks, in one pass."""

    def __init__(self) -> None:
        self.documents = self.entities = 0
        self.non_utf8 = self.encoding_uncertain = 0
        self.statuses: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.languages: Counter[str] = Counter()
        self.names: Counter[tuple[str, str]] = Counter()
        self.duplicates_of: Counter[str] = Counter()

    def observe(self, docs: Iterable[Document]) -> Iterator[Document]:
        """Pass `docs` through unchanged, counting each."""
        for doc in docs:
            self.add(doc)
            yield doc

    def add(self, doc: Document) -> None:
        self.documents += 1
        self.statuses[doc.status] += 1
        if doc.status == "rejected":
            self.rejected[rejection_kind(doc.reason)] += 1
        elif doc.status == "ok":
            self.languages[doc.lang or "none"] += 1
        if doc.duplicate_of:
            self.duplicates_of[doc.duplicate_of] += 1
        self.non_utf8 += "encoding" in doc.meta
        self.encoding_uncertain += bool(doc.meta.get("encoding_uncertain"))
        self.entities += len(doc.entities)
        for ent in doc.entities:
            if ent.label not in UNNAMED_LABELS:
                self.names[(ent.canonical or ent.text, ent.label)] += 1

    def partial(self) -> dict[str, Any]:
        """Everything counted, JSON-able, for `merged`: a shard's share of the corpus statistics."""
        return {
            "documents": self.documents,
            "entities": self.entities,
            "non_utf8": self.non_utf8,
            "encoding_uncertain": self.encoding_uncertain,
            "statuses": dict(self.statuses),
            "rejected": dict(self.rejected),
            "languages": dict(self.languages),
            "names": [[name, label, count] for (name, label), count in self.names.items()],
            "duplicates_of": dict(self.duplicates_of),
        }

    @classmethod
    def merged(cls, partials: Iterable[dict[str, Any]]) -> StatsCollector:
        """The counts of several shards together, as if their records had streamed through one."""
        total = cls()
        for part in partials:
            total.documents += part["documents"]
            total.entities += part["entities"]
            total.non_utf8 += part["non_utf8"]
            total.encoding_uncertain += part["encoding_uncertain"]
            total.statuses.update(part["statuses"])
            total.rejected.update(part["rejected"])
            total.languages.update(part["languages"])
            total.names.update({(name, label): count for name, label, count in part["names"]})
            total.duplicates_of.update(part["duplicates_of"])
        return total

    def result(self) -> CorpusStats:
        top = sorted(self.names.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ENTITIES]
        return CorpusStats(
            documents=self.documents,
            statuses=dict(sorted(self.statuses.items())),
            rejected=dict(sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
            languages=dict(sorted(self.languages.items(), key=lambda kv: (-kv[1], kv[0]))),
            entities=self.entities,
            top_entities=[(name, label, count) for (name, label), count in top],
            clusters=len(self.duplicates_of),
            largest_clusters=[
                (canonical, 1 + count)
                for canonical, count in sorted(self.duplicates_of.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CLUSTERS]
            ],
            non_utf8=self.non_utf8,
            encoding_uncertain=self.encoding_uncertain,
        )


def rejection_kind(reason: str | None) -> str:
    """Group rejection reasons by their kind (the text before a colon) for the summary."""
    return (reason or "unknown").split(":", 1)[0]


def build_manifest(
    *,
    run_id: str,
    run_name: str,
    corpus: str,
    config_path: str,
    config_digest: str,
    files: int,
    step_versions: dict[str, str],
    stages: dict[str, StageStats],
    stats: CorpusStats,
    outputs: list[str],
    published: dict[str, dict[str, int]] | None = None,
    skipped_output_folders: list[str] | None = None,
    skipped_links: int = 0,
    hashed_files: dict[str, int] | None = None,
    store: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The run record written to `manifest.json` (and returned by the flow)."""
    read = stages.get("read", StageStats())
    return {
        "run_id": run_id,
        "run_name": run_name,
        "corpus": corpus,
        "config": config_path,
        "config_hash": config_digest,
        "files": files,
        "skipped_output_folders": skipped_output_folders or [],
        "skipped_links": skipped_links,
        # Input files read to hash them, and those whose stat was unchanged since the last scan.
        "hashed_files": hashed_files or {"hashed": 0, "unchanged": 0},
        "documents": stats.documents,
        "counts": stats.statuses,
        "rejected": stats.rejected,
        "languages": stats.languages,
        "entities": stats.entities,
        "top_entities": [{"name": n, "label": l, "count": c} for n, l, c in stats.top_entities],
        "clusters": stats.clusters,
        "largest_clusters": [{"canonical": c, "documents": n} for c, n in stats.largest_clusters],
        # Documents decoded from another encoding than UTF-8, and those whose encoding was a guess.
        "encodings": {"non_utf8": stats.non_utf8, "uncertain": stats.encoding_uncertain},
        "step_versions": step_versions,
        "read": asdict(read),
        "steps": {name: asdict(s) for name, s in stages.items() if name != "read"},
        "outputs": outputs,
        "published": published or {},
        # Everything under `.textmill` (store packs, bundles, indexes, cached task results) after gc.
        "store": store or {"bytes": 0, "files": 0},
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / "manifest.json"
    write_atomic(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def summary_markdown(manifest: dict[str, Any]) -> str:
    """The markdown artifact: counts, cache use per step, languages, top entities, clusters."""
    counts = manifest["counts"]
    read = manifest["read"]
    lines = [
        f"# textmill run `{manifest['run_name']}`",
        "",
        f"Corpus `{manifest['corpus']}`: {manifest['files']} files, {manifest['documents']} documents — "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "duplicate", "rejected")),
        "",
        f"New or changed files read this run: {read['computed']}; unchanged, from the cache: {read['cached']}.",
        "",
        "| step | computed | cached | skipped | updated | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in manifest["steps"].items():
        lines.append(
            f"| {name} | {s['computed']} | {s['cached']} | {s['skipped']} | {s['updated']} | {s['seconds']:.2f} |"
        )
    store = manifest.get("store")
    if store:
        lines += ["", f"Store (`.textmill`): {store['files']} files, {human_bytes(store['bytes'])}."]
    if manifest["rejected"]:
        lines += ["", "Rejected: " + ", ".join(f"{k} ({v})" for k, v in manifest["rejected"].items())]
    encodings = manifest.get("encodings", {})
    if encodings.get("non_utf8") or encodings.get("uncertain"):
        lines += ["", f"Not UTF-8: {encodings['non_utf8']} documents decoded from another encoding, {encodings['uncertain']} uncertain."]
    if manifest["languages"]:
        lines += ["", "Languages: " + ", ".join(f"{k} {v}" for k, v in manifest["languages"].items())]
    if manifest["top_entities"]:
        lines += ["", "Top entities: " + ", ".join(f"{e['name']} ({e['label']}, {e['count']})" for e in manifest["top_entities"])]
    if manifest["clusters"]:
        largest = ", ".join(f"`{c['canonical']}` ({c['documents']} documents)" for c in manifest["largest_clusters"])
        lines += ["", f"Duplicate clusters: {manifest['clusters']}; largest: {largest}"]
    return "\n".join(lines) + "\n"


def human_bytes(count: int) -> str:
    """1234567 -> `1.2 MB` (decimal units, as `du --si` prints them)."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def steps_table(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The table artifact: one row per step."""
    return [{"step": name, **values} for name, values in manifest["steps"].items()]
