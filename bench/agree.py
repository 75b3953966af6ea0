"""Do textmill and the plain baseline produce the same corpus? Statuses, clusters, languages, entities.

A speed ratio means something only if both programs did the same work, so `bench.speed` fails when
they disagree. Clusters are compared as partitions (sets of member ids), not by their names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a JSON Lines file (the baseline's `documents.jsonl`) or of a folder of
    parts (textmill's `jsonl/`), by id."""
    files = sorted(path.glob("part-*.jsonl")) if path.is_dir() else [path]
    records: dict[str, dict[str, Any]] = {}
    for file in files:
        with open(file, encoding="utf-8") as fh:
            records.update((record["id"], record) for record in map(json.loads, fh))
    return records


def partition(records: dict[str, dict[str, Any]]) -> set[frozenset[str]]:
    """The clusters of two or more documents, each as the set of its members' ids."""
    groups: dict[str, set[str]] = {}
    for doc_id, record in records.items():
        if record.get("cluster"):
            groups.setdefault(record["cluster"], set()).add(doc_id)
    return {frozenset(members) for members in groups.values() if len(members) > 1}


def compare(textmill: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts of agreement and up to ten examples of each kind of disagreement."""
    report: dict[str, Any] = {"documents": len(textmill), "baseline_documents": len(baseline)}
    shared = sorted(set(textmill) & set(baseline))
    report["only_textmill"] = sorted(set(textmill) - set(baseline))
    report["only_baseline"] = sorted(set(baseline) - set(textmill))

    def differing(field: Any) -> list[str]:
        return [i for i in shared if field(textmill[i]) != field(baseline[i])]

    report["status_mismatch"] = differing(lambda r: r["status"] if r["status"] != "rejected" else "rejected")
    report["text_mismatch"] = differing(lambda r: r.get("text") or "")
    ok = [i for i in shared if textmill[i]["status"] == "ok" == baseline[i]["status"]]
    report["language_mismatch"] = [i for i in ok if textmill[i].get("lang") != baseline[i].get("lang")]
    report["entity_count_mismatch"] = [
        i for i in ok if len(textmill[i].get("entities") or []) != len(baseline[i].get("entities") or [])
    ]
    ours, theirs = partition(textmill), partition(baseline)
    report["clusters"] = len(ours)
    report["baseline_clusters"] = len(theirs)
    report["cluster_mismatch"] = sorted(sorted(c) for c in ours ^ theirs)
    report["languages"] = _histogram(textmill[i].get("lang") for i in ok)
    report["entities"] = sum(len(textmill[i].get("entities") or []) for i in ok)
    report["baseline_entities"] = sum(len(baseline[i].get("entities") or []) for i in ok)
    problems = [k for k in DISAGREEMENTS if report[k]]
    report["agree"] = not problems
    for key in DISAGREEMENTS:
        report[f"{key}_count"] = len(report[key])
        report[key] = report[key][:10]
    return report


DISAGREEMENTS = (
    "only_textmill", "only_baseline", "status_mismatch", "text_mismatch",
    "language_mismatch", "entity_count_mismatch", "cluster_mismatch",
)


def _histogram(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
