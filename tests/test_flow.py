"""The whole pipeline on Prefect, end to end, on the seeds: results, caching, states."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import REPO, SEEDS, SeedsRun, published_files
from flowkit import computed, records, run_flow, set_option, task_run_states

pytestmark = pytest.mark.slow

BOILERPLATE = ("pic.twitter.com", "This comment contains spoilers", "To suggest a correction", "Comments (")
COMMENT_TEXT = ("Puny Putin continues", "Internal attacks by Russian partisan groups", "Slava Ukraini")


def test_seed_clusters_and_languages(seeds_run: SeedsRun) -> None:
    out, first = seeds_run.out, seeds_run.first
    recs = records(out)
    assert len(recs) == 5 and first["documents"] == 5 and first["files"] == 5
    by_prefix = {doc_id[:3]: r for doc_id, r in recs.items()}
    ids = {p: r["id"] for p, r in by_prefix.items()}
    canonical = ids["001"]  # the longest cleaned text of the three renderings
    assert {p: (r["status"], r["cluster"], r["duplicate_of"]) for p, r in by_prefix.items()} == {
        "000": ("duplicate", canonical, canonical),
        "001": ("ok", canonical, None),
        "002": ("ok", ids["002"], None),
        "003": ("ok", ids["003"], None),
        "004": ("duplicate", canonical, canonical),
    }
    assert first["counts"] == {"duplicate": 2, "ok": 3}
    assert all(r["lang"] == "en" for r in recs.values() if r["status"] == "ok")
    for p in ("000", "001", "002", "003"):
        assert by_prefix[p]["meta"]["date"] == "2023-05-03"


def test_seed_cleaning_removes_boilerplate(seeds_run: SeedsRun) -> None:
    out = seeds_run.out
    for record in records(out).values():
        for needle in BOILERPLATE + COMMENT_TEXT:
            assert needle not in record["text"], (record["id"], needle)
        assert not record["text"].startswith((" date", "date"))


def test_seed_entities_have_corpus_canonical_names(seeds_run: SeedsRun) -> None:
    out, first = seeds_run.out, seeds_run.first
    entities = [e for r in records(out).values() for e in r["entities"]]
    people = {e["canonical"] for e in entities if e["label"] == "PERSON"}
    places = {e["canonical"] for e in entities if e["label"] == "GPE"}
    assert {"Vladimir Putin", "Volodymyr Zelenskyy", "Zelensky", "Dmitry Peskov"} <= people
    assert {"Moscow", "Ukraine", "Russia"} <= places
    putin = {e["canonical"] for e in entities if e["label"] == "PERSON" and "putin" in e["text"].lower()}
    assert putin == {"Vladimir Putin"}
    for record in records(out).values():
        for e in record["entities"]:
            assert record["text"][e["start"] : e["end"]] == e["text"]
    assert first["entities"] == len(entities)


def test_second_run_computes_nothing_and_shards_are_cached(seeds_run: SeedsRun) -> None:
    first, second = seeds_run.first, seeds_run.second
    assert computed(first) == {"clean": 5, "dedupe": 5, "language": 3, "entities": 3, "publish": 5}
    assert computed(second) == {name: 0 for name in first["steps"]}
    assert second["read"]["computed"] == 0
    assert (first["hashed_files"], second["hashed_files"]) == ({"hashed": 5, "unchanged": 0}, {"hashed": 0, "unchanged": 5})
    assert (first["published"], second["published"]) == (
        {"sqlite": {"inserted": 5, "updated": 0, "unchanged": 0, "deleted": 0}},
        {"sqlite": {"inserted": 0, "updated": 0, "unchanged": 5, "deleted": 0}},
    )
    varying = ("run_id", "read", "steps", "hashed_files", "published", "store")
    assert {k: v for k, v in second.items() if k not in varying} == {k: v for k, v in first.items() if k not in varying}
    assert second["store"]["files"] == first["store"]["files"] + 1, "a warm run adds only its run record"
    states = task_run_states(second["run_id"], expected=13)
    shard_tasks = {name: state for name, state in states.items() if not name.startswith(("discover", "publish", "gc"))}
    assert {"read-0", "clean-0", "dedupe-0", "language-0", "entities-0"} <= set(shard_tasks)
    assert set(shard_tasks.values()) == {"Cached"}, states
    assert states["publish"] == "Completed"


def test_unwatched_cached_shards_get_no_task_runs_and_keep_their_results(
    prefect_server: None, seeds_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TEXTMILL_CACHED_TASK_RUNS=off`, what an ad hoc run on its temporary server gets: a warm
    run serves every cached task from Prefect's cache without a task run, and its manifest and
    run record (the results gc keeps) are those of a warm run with task runs."""
    config = tmp_path / "pipeline.toml"
    shutil.copy(REPO / "config" / "pipeline.toml", config)
    set_option(config, "pipeline", 'steps = ["clean", "dedupe", "language", "publish"]')
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config)
    with_runs = run_flow(seeds_copy, out, config)
    monkeypatch.setenv("TEXTMILL_CACHED_TASK_RUNS", "off")
    without = run_flow(seeds_copy, out, config)

    assert computed(without) == {name: 0 for name in without["steps"]} and without["read"]["computed"] == 0
    varying = ("run_id", "read", "steps", "store")
    assert {k: v for k, v in without.items() if k not in varying} == {k: v for k, v in with_runs.items() if k not in varying}
    assert {k: v["cached"] for k, v in without["steps"].items()} == {k: v["cached"] for k, v in with_runs["steps"].items()}
    watched = task_run_states(with_runs["run_id"], expected=12)
    assert {"read-0", "clean-0", "dedupe-0", "language-0", "publish-0"} <= set(watched), watched
    unwatched = task_run_states(without["run_id"], expected=3)
    assert len(unwatched) == 3 and {name.partition("-")[0] for name in unwatched} == {"discover", "publish", "gc"}, unwatched

    def run_record(run_id: str) -> dict[str, list[str]]:
        [path] = (out / ".textmill" / "runs").glob(f"*-{run_id}.json")
        return json.loads(path.read_text())

    kept, served = run_record(with_runs["run_id"]), run_record(without["run_id"])
    assert sorted(served["results"]) == sorted(kept["results"]) and kept["results"]


def test_second_identical_run_leaves_published_files_untouched(seeds_run: SeedsRun) -> None:
    assert seeds_run.published_after == seeds_run.published_before


def test_outputs_written_completely(seeds_run: SeedsRun) -> None:
    import pyarrow.parquet as pq

    out, first = seeds_run.out, seeds_run.first
    assert pq.read_table(out / "documents").num_rows == 5
    assert pq.read_table(out / "entities").num_rows == first["entities"]
    assert first["outputs"] == ["documents/", "entities/", "jsonl/", "textmill.sqlite", "manifest.json"]
    assert json.loads((out / "manifest.json").read_text())["run_id"] != first["run_id"]
    with sqlite3.connect(out / "textmill.sqlite") as db:
        assert db.execute("SELECT count(*) FROM documents").fetchone() == (5,)
        assert db.execute("SELECT count(*) FROM entities").fetchone() == (first["entities"],)
    assert not list(out.rglob(".*.tmp"))


def test_republishing_changes_no_file(prefect_server: None, seeds_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_flow(seeds_copy, out)
    before = published_files(out)
    shutil.rmtree(out / ".textmill" / "publish")
    manifest = run_flow(seeds_copy, out)
    assert manifest["steps"]["publish"]["computed"] == 5
    assert published_files(out) == before


def test_run_name_includes_corpus(seeds_run: SeedsRun) -> None:
    first = seeds_run.first
    assert first["run_name"] == "textmill-seeds"


def test_adding_one_file_computes_one_document(prefect_server: None, seeds_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_flow(seeds_copy, out)
    (seeds_copy / "new" ).mkdir()
    (seeds_copy / "new" / "harvest.txt").write_text(
        "Farmers in the Loire valley began the grape harvest a week early this year after a hot, dry summer.\n"
        "Growers said the crop was smaller but of unusually high quality, and prices are expected to rise.\n"
    )
    manifest = run_flow(seeds_copy, out)
    assert computed(manifest) == {"clean": 1, "dedupe": 1, "language": 1, "entities": 1, "publish": 6}
    assert manifest["read"]["computed"] == 1
    assert manifest["hashed_files"] == {"hashed": 1, "unchanged": 5}, "only the new file's bytes are read to hash it"
    assert records(out)["new/harvest.txt"]["lang"] == "en"


def test_changing_options_recomputes_that_step_and_later(
    prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config_copy)
    set_option(config_copy, "steps.language", "max_chars = 4000")
    manifest = run_flow(seeds_copy, out, config_copy)
    assert computed(manifest) == {"clean": 0, "dedupe": 0, "language": 3, "entities": 3, "publish": 5}


def test_bumping_a_step_version_recomputes_that_step_and_later(
    prefect_server: None, seeds_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textmill.tasks.dedupe import Deduplicator

    out = tmp_path / "out"
    run_flow(seeds_copy, out)
    monkeypatch.setattr(Deduplicator, "version", Deduplicator.version + "-next")
    manifest = run_flow(seeds_copy, out)
    assert computed(manifest) == {"clean": 0, "dedupe": 5, "language": 3, "entities": 3, "publish": 5}
    assert manifest["step_versions"]["dedupe"].endswith("-next")


def test_changing_input_limits_rereads_with_the_new_limit(
    prefect_server: None, seeds_copy: Path, config_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_flow(seeds_copy, out, config_copy)
    set_option(config_copy, "input", "max_bytes = 3000")
    limited = run_flow(seeds_copy, out, config_copy)
    assert limited["counts"] == {"ok": 1, "rejected": 4}
    assert {r["reason"].split(":")[0] for r in records(out).values() if r["status"] == "rejected"} == {"file too large"}
    set_option(config_copy, "input", "max_bytes = 10_000_000")
    restored = run_flow(seeds_copy, out, config_copy)
    assert restored["counts"] == {"duplicate": 2, "ok": 3}
    assert computed(restored)["clean"] == 0
