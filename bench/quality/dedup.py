"""Deduplication quality: textmill's clusters checked with exact set computations.

textmill runs as a user runs it (the CLI in a subprocess, pipeline clean -> dedupe -> publish,
the project's clean and dedupe options), and its records (`jsonl/`) are checked against:
byte-identical files (sha256 of the raw bytes, computed here); exact Jaccard and containment of
the same shingles the step uses (casefolded `\\w+` words, 5-word shingles, a shorter text is one
shingle), rewritten here rather than imported so that a bug in the step is not shared. MinHash
only estimates these, so the check finds both false merges (a member with no mate above a
threshold) and misses (pairs above a threshold in different clusters; all pairs sharing a
shingle are found exactly through an inverted index).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.agree import load_records
from bench.common import REPO, markdown_table
from bench.quality import CONFIG, QualityError, bar, finish, first_files, require_dir, timed

WORD = re.compile(r"\w+")
BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SEEDS = {"cluster": {"000", "001", "004"}, "canonical": "001", "alone": {"002", "003"}}
EXAMPLES = 15


def shingle_set(text: str, size: int) -> frozenset[str]:
    words = WORD.findall(text.casefold())
    if len(words) <= size:
        return frozenset({" ".join(words)} if words else ())
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def identical_groups(root: Path) -> list[list[str]]:
    """Files with the same raw bytes, as ids relative to `root` (hidden folders skipped, like the reader)."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.relative_to(root).as_posix())
    return sorted(sorted(ids) for ids in by_hash.values() if len(ids) > 1)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path) -> dict[str, Any]:
    """The project config cut down to clean -> dedupe -> publish(jsonl); returns the dedupe options."""
    raw = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    clean = {**raw["steps"].get("clean", {})}
    clean["rules"] = str((CONFIG.parent / clean.get("rules", "boilerplate.toml")).resolve())
    sections = {
        "pipeline": {"steps": ["clean", "dedupe", "publish"]},
        "input": raw.get("input", {}), "run": raw.get("run", {}),
        "steps.clean": clean, "steps.dedupe": raw["steps"].get("dedupe", {}), "steps.publish": {"formats": ["jsonl"]},
    }
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in body.items()) + "\n"
                            for name, body in sections.items()), encoding="utf-8")
    from textmill.tasks.dedupe import Deduplicator

    return Deduplicator.Options.model_validate(sections["steps.dedupe"]).model_dump()


def run_textmill(corpus: Path, work: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any], float]:
    """textmill's CLI on `corpus`; its records by id, the dedupe options it used, its wall time."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "pipeline.toml"
    options = write_config(config)
    out = work / "out"
    argv = [sys.executable, "-m", "textmill.flows.cli", "run", str(corpus), "--out", str(out), "--config", str(config)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc, seconds = timed(lambda: subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True))
    if proc.returncode != 0:
        raise QualityError(f"`{' '.join(argv)}` exited {proc.returncode}")
    records = load_records(out / "jsonl")
    return records, options, seconds


def clusters_of(records: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for doc_id, record in sorted(records.items()):
        if record.get("cluster"):
            groups[record["cluster"]].append(doc_id)
    return {c: members for c, members in groups.items() if len(members) > 1}


def scores(a: frozenset[str], b: frozenset[str]) -> tuple[float, float, float]:
    """Exact Jaccard, |A∩B|/|A| and |A∩B|/|B|."""
    inter = len(a & b)
    union = len(a) + len(b) - inter
    return (inter / union if union else 0.0, inter / len(a) if a else 0.0, inter / len(b) if b else 0.0)


def similar_pairs(sets: dict[str, frozenset[str]]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Exact scores of every pair sharing at least one shingle, via an inverted index."""
    postings: dict[str, list[str]] = defaultdict(list)
    for doc_id, shingles in sets.items():
        for s in shingles:
            postings[s].append(doc_id)
    pairs = {}
    with bar("exact pairs", len(sets)) as advance:
        for doc_id, shingles in sets.items():
            shared = Counter(o for s in shingles for o in postings[s] if o > doc_id)
            for other, inter in shared.items():
                size_a, size_b = len(shingles), len(sets[other])
                pairs[(doc_id, other)] = (inter / (size_a + size_b - inter), inter / size_a, inter / size_b)
            advance(1)
    return pairs


def qualifies(score: tuple[float, float, float], sizes: tuple[int, int], opts: dict[str, Any]) -> str | None:
    """Why a pair must be linked under the step's options ('jaccard', 'containment'), or None."""
    jaccard, a_in_b, b_in_a = score
    if jaccard >= opts["jaccard_threshold"]:
        return "jaccard"
    if opts["containment"] and any(c >= opts["containment_threshold"] and n >= opts["containment_min_shingles"]
                                   for c, n in ((a_in_b, sizes[0]), (b_in_a, sizes[1]))):
        return "containment"
    return None


def false_merges(clusters: dict[str, list[str]], sets: dict[str, frozenset[str]], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Members with no cluster mate at exact Jaccard or containment (either way) above its threshold."""
    found = []
    for cluster, members in clusters.items():
        for doc in members:
            best = max((scores(sets[doc], sets[m]) for m in members if m != doc), key=lambda s: (s[0], max(s[1:])))
            if best[0] < opts["jaccard_threshold"] and max(best[1:]) < opts["containment_threshold"]:
                found.append({"id": doc, "cluster": cluster, "best_jaccard": best[0], "best_containment": max(best[1:])})
    return found


def histogram(values: list[float]) -> list[int]:
    """Counts in [0, .5), [.5, .6), ..., [.9, 1), [1, 1]."""
    counts = [0] * (len(BINS) + 1)
    for v in values:
        counts[sum(v >= edge for edge in BINS)] += 1
    return counts


def analyse(records: dict[str, dict[str, Any]], groups: list[list[str]], opts: dict[str, Any]) -> dict[str, Any]:
    """Every check on one textmill run."""
    sets = {i: shingle_set(r.get("text") or "", opts["shingle_size"]) for i, r in records.items() if r["status"] != "rejected"}
    clusters = clusters_of(records)
    cluster_of = {doc: c for c, members in clusters.items() for doc in members}
    split = [g for g in groups if len({cluster_of.get(d) for d in g}) != 1 or cluster_of.get(g[0]) is None]
    sha = {i: r.get("sha256") for i, r in records.items()}
    near = []
    for members in clusters.values():
        for a, b in itertools.combinations(members, 2):
            if sha[a] != sha[b]:
                j, ab, ba = scores(sets[a], sets[b])
                near.append({"a": a, "b": b, "jaccard": j, "containment": max(ab, ba)})
    pairs = similar_pairs(sets)
    should = {p: (why, s) for p, s in pairs.items() if (why := qualifies(s, (len(sets[p[0]]), len(sets[p[1]])), opts))}
    missed = [{"a": a, "b": b, "why": why, "jaccard": s[0], "a_in_b": s[1], "b_in_a": s[2]}
              for (a, b), (why, s) in sorted(should.items()) if cluster_of.get(a) is None or cluster_of.get(a) != cluster_of.get(b)]
    return {
        "documents": len(records), "rejected": len(records) - len(sets),
        "clusters": len(clusters), "clustered_documents": len(cluster_of),
        "duplicates": sum(r["status"] == "duplicate" for r in records.values()),
        "identical_groups": len(groups), "identical_groups_split": split,
        "false_merges": false_merges(clusters, sets, opts),
        "near_pairs": len(near), "near_examples": sorted(near, key=lambda p: p["jaccard"])[:EXAMPLES],
        "near_jaccard_hist": histogram([p["jaccard"] for p in near]),
        "near_containment_hist": histogram([p["containment"] for p in near]),
        "qualifying_pairs": len(should), "qualifying_by": dict(Counter(why for why, _ in should.values())),
        "recalled_pairs": len(should) - len(missed), "missed": missed,
        "cluster_members": sorted(sorted(m) for m in clusters.values()),
    }


def seeds_check(work: Path) -> dict[str, Any]:
    """The seeds' expected clustering: {000, 001, 004} canonical 001; 002 and 003 alone."""
    records, _, seconds = run_textmill(REPO / "seeds", work)
    prefix = {doc_id: doc_id.split("_")[0] for doc_id in records}
    clusters = [{prefix[d] for d in m} for m in clusters_of(records).values()]
    canonical = {prefix[r["cluster"]] for r in records.values() if prefix[r["id"]] in SEEDS["cluster"] and r.get("cluster")}
    ok = clusters == [SEEDS["cluster"]] and canonical == {SEEDS["canonical"]}
    return {"pass": ok, "clusters": [sorted(c) for c in clusters], "canonical": sorted(canonical), "seconds": seconds}


def run(corpus: Path, results: Path, limit: int | None, started: float) -> None:
    root = require_dir(corpus, "dedup")
    with tempfile.TemporaryDirectory(prefix="textmill-dedup-") as tmp:
        if limit is not None:
            root = first_files(root, limit, Path(tmp) / "sample")
        groups = identical_groups(root)
        print("running textmill (clean, dedupe, publish) on the corpus ...", file=sys.stderr)
        records, opts, seconds = run_textmill(root, Path(tmp) / "corpus")
        print("running textmill on seeds/ ...", file=sys.stderr)
        seeds = seeds_check(Path(tmp) / "seeds")
    report = analyse(records, groups, opts)
    data = {"corpus": str(corpus), "options": opts, "textmill_seconds": seconds, "identical": groups, **report, "seeds": seeds}
    finish(results, "dedup", data, markdown(data), started)


def markdown(d: dict[str, Any]) -> str:
    o = d["options"]
    summary = [
        ("documents (rejected)", f"{d['documents']} ({d['rejected']})"),
        ("byte-identical groups / inside one textmill cluster", f"{d['identical_groups']} / {d['identical_groups'] - len(d['identical_groups_split'])}"),
        ("textmill clusters / clustered documents / duplicates", f"{d['clusters']} / {d['clustered_documents']} / {d['duplicates']}"),
        ("false merges (no mate above a threshold, exact)", len(d["false_merges"])),
        ("clustered pairs not byte-identical", d["near_pairs"]),
        ("pairs above a threshold (exact) / in one cluster", f"{d['qualifying_pairs']} {d['qualifying_by']} / {d['recalled_pairs']}"),
        ("recall of exact pairs", d["recalled_pairs"] / d["qualifying_pairs"] if d["qualifying_pairs"] else None),
        ("seeds: {000,001,004} canonical 001; 002, 003 alone", f"{'PASS' if d['seeds']['pass'] else 'FAIL'} (got {d['seeds']['clusters']}, canonical {d['seeds']['canonical']})"),
        ("textmill run (CLI, wall s): corpus / seeds", f"{d['textmill_seconds']:.1f} / {d['seeds']['seconds']:.1f}"),
    ]
    labels = ["<0.5", "0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1", "1.0"]
    parts = [
        f"## Deduplication (jaccard ≥ {o['jaccard_threshold']}, containment ≥ {o['containment_threshold']} "
        f"for ≥ {o['containment_min_shingles']} shingles, {o['shingle_size']}-word shingles)\n",
        markdown_table(["check", "result"], summary),
        "### Clustered pairs that are not byte-identical: exact Jaccard and max containment\n",
        markdown_table(["score", *labels], [("jaccard", *d["near_jaccard_hist"]), ("containment", *d["near_containment_hist"])]),
        markdown_table(["a", "b", "jaccard", "containment"],
                       [(p["a"], p["b"], p["jaccard"], p["containment"]) for p in d["near_examples"]]),
    ]
    if d["identical_groups_split"]:
        parts += ["### Byte-identical groups not inside one cluster\n", "\n".join(f"- {g}" for g in d["identical_groups_split"]) + "\n"]
    if d["false_merges"]:
        parts += ["### False merges\n", markdown_table(["id", "cluster", "best jaccard", "best containment"],
                                                     [tuple(f.values()) for f in d["false_merges"]])]
    if d["missed"]:
        parts += [f"### Missed pairs (first {EXAMPLES} of {len(d['missed'])})\n",
                  markdown_table(["a", "b", "why", "jaccard", "|A∩B|/|A|", "|A∩B|/|B|"],
                                 [tuple(m.values()) for m in d["missed"][:EXAMPLES]])]
    return "\n".join(parts)
