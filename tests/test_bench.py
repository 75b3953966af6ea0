"""The benchmark helpers whose mistakes would make a figure wrong: generated corpora, agreement."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench.agree import DISAGREEMENTS, compare
from bench.baseline import clean
from bench.synth import generate

ARTICLE = (
    "Headline number {n}\n\n"
    "The first paragraph of article {n} tells the reader what happened and where it happened today.\n\n"
    "A second paragraph of article {n} adds the reaction of officials and of people who saw it.\n\n"
    "The third paragraph of article {n} gives the background that explains why it matters now.\n\n"
    "Finally the fourth paragraph of article {n} says what is expected to happen over the next weeks.\n"
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    for n in range(6):
        (root / f"{n:03d}.txt").write_text(ARTICLE.format(n=n), encoding="utf-8")
    return root


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.txt"))}


def test_generated_corpus_is_deterministic_and_counts_add_up(source: Path, tmp_path: Path) -> None:
    first = generate(source, tmp_path / "a", 300, seed=7)
    second = generate(source, tmp_path / "b", 300, seed=7)
    other = generate(source, tmp_path / "c", 300, seed=8)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")
    assert len(files(tmp_path / "a")) == 300
    assert first.unique + first.exact + first.near_edit + first.near_truncated == 300
    assert first.exact > 0 and first.near_edit > 0 and first.near_truncated > 0
    assert first.summary() == second.summary() != other.summary()
    assert first.bytes == sum(len(b) for b in files(tmp_path / "a").values())


def test_planted_duplicates_are_what_they_claim(source: Path, tmp_path: Path) -> None:
    planted = generate(source, tmp_path / "g", 300, seed=1)
    corpus = files(tmp_path / "g")
    exact = [name for name, original in planted.duplicates_of.items() if corpus[name] == corpus[original]]
    assert len(exact) == planted.exact
    for name, original in planted.duplicates_of.items():
        copy_paragraphs = corpus[name].decode().strip().split("\n\n")
        original_paragraphs = corpus[original].decode().strip().split("\n\n")
        assert copy_paragraphs[0] == original_paragraphs[0]
        if len(copy_paragraphs) < len(original_paragraphs):
            assert copy_paragraphs == original_paragraphs[: len(copy_paragraphs)]


def test_baseline_clean_drops_scripts_and_repeated_lines_but_their_first_copy() -> None:
    html = "".join(
        f"<script>var x = {n};</script><p>Body  text number {n}</p><p>Share this article</p>" for n in range(3)
    )
    text = clean(f"<html><body>{html}</body></html>", "html")
    assert "var x" not in text
    assert [line for line in text.splitlines() if line] == [
        "Body text number 0", "Share this article", "Body text number 1", "Body text number 2"
    ]


def records() -> dict[str, dict[str, Any]]:
    base = {"status": "ok", "text": "t", "lang": "en", "entities": [{}], "cluster": None}
    out = {f"d{i}": {**copy.deepcopy(base), "id": f"d{i}"} for i in range(4)}
    out["d0"]["cluster"] = out["d1"]["cluster"] = "d0"
    out["d1"]["status"] = "duplicate"
    return out


def test_agreement_accepts_identical_outputs_with_differently_named_clusters() -> None:
    ours, theirs = records(), records()
    theirs["d0"]["cluster"] = theirs["d1"]["cluster"] = "d1"
    report = compare(ours, theirs)
    assert report["agree"], report


@pytest.mark.parametrize(
    ("change", "mismatch", "count"),
    [
        (lambda r: r["d2"].update(lang="fr"), "language_mismatch", 1),
        (lambda r: r["d2"].update(entities=[]), "entity_count_mismatch", 1),
        # both partitions, {d0, d1} and {d0, d1, d2}, are in the symmetric difference
        (lambda r: r["d2"].update(cluster="d0"), "cluster_mismatch", 2),
        (lambda r: r["d3"].update(status="rejected"), "status_mismatch", 1),
        (lambda r: r.pop("d3"), "only_textmill", 1),
    ],
)
def test_agreement_reports_each_kind_of_difference(change: Any, mismatch: str, count: int) -> None:
    theirs = records()
    change(theirs)
    report = compare(records(), theirs)
    assert not report["agree"]
    assert {k: report[f"{k}_count"] for k in DISAGREEMENTS if report[f"{k}_count"]} == {mismatch: count}


def test_runner_configurations_parse_and_bad_ones_are_refused() -> None:
    from bench.runners import parse_configs

    assert parse_configs("threads:1, dask:2,processes:2") == [("threads", 1), ("dask", 2), ("processes", 2)]
    for bad in ("pool:2", "threads", "threads:0", "dask:two"):
        with pytest.raises(SystemExit, match="is not RUNNER:WORKERS"):
            parse_configs(bad)


@pytest.mark.slow
def test_a_new_prefect_home_gets_its_database_before_anything_is_measured(tmp_path: Path) -> None:
    """The benchmarks' cold runs find Prefect's database made: one run over the seeds makes it
    in the new home, and leaves no output behind."""
    from bench.measure import bench_env, prefect_home_note, prepare_prefect_home

    home = tmp_path / "prefect-home"
    setup = prepare_prefect_home(bench_env(home), tmp_path, tmp_path / "runs.log")
    assert (home / "prefect.db").stat().st_size > 0
    assert setup.exit_code == 0 and setup.wall_s > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefect-home", "runs.log"]
    assert f"({setup.wall_s:.1f} s wall)" in prefect_home_note(setup.to_dict())
    assert prefect_home_note(None) == ""


def test_a_scale_run_kept_apart_plots_beside_its_results(tmp_path: Path) -> None:
    from bench.common import DEFAULT_RESULTS, REPO
    from bench.scale import plot_path

    assert plot_path(tmp_path, None) == tmp_path / "bench-scale.png"
    assert plot_path(DEFAULT_RESULTS, None) == REPO / "docs" / "bench-scale.png"
    assert plot_path(tmp_path, tmp_path / "mine.png") == tmp_path / "mine.png"
