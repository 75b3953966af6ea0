"""Third-party steps: registered from outside the package, placed by config alone."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from conftest import CONFIG, SEEDS
from flowkit import computed, install_plugin, records, run_flow
from textmill.flows.config import load_config
from textmill.tasks.base import ConfigError
from textmill.tasks.registry import load_registry

PLUGIN = '''
from pydantic import Field

from textmill.tasks.base import DocumentStep, StepOptions


class WordCountOptions(StepOptions):
    field: str = Field("words", description="meta key to write")
    fail: bool = Field(False, description="raise, to test failure handling")


class WordCounter(DocumentStep):
    """Counts words into meta."""

    name = "wordcount"
    version = "1"
    Options = WordCountOptions

    def process(self, docs):
        if self.options.fail:
            raise RuntimeError("wordcount was told to fail")
        return [self.stamp(d, meta={**d.meta, self.options.field: len(d.text.split())}) for d in docs]
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway distribution, `textmill-wordcount`, installed by putting it on sys.path."""
    return install_plugin(
        monkeypatch, tmp_path / "site", "textmill_wordcount", PLUGIN, "wordcount = textmill_wordcount:WordCounter"
    )


def config_with_plugin(tmp_path: Path, options: str = "") -> Path:
    folder = tmp_path / "config"
    shutil.copytree(CONFIG.parent, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    path = folder / "pipeline.toml"
    text = path.read_text().replace('steps = ["clean", "dedupe"', 'steps = ["clean", "wordcount", "dedupe"')
    path.write_text(text + f"\n[steps.wordcount]\nfield = \"word_count\"\n{options}\n")
    return path


def test_plugin_is_discovered_through_entry_points(plugin: Path) -> None:
    assert "wordcount" in load_registry()


@pytest.mark.slow
def test_plugin_runs_between_two_builtin_steps(prefect_server: None, plugin: Path, tmp_path: Path) -> None:
    config = config_with_plugin(tmp_path)
    manifest = run_flow(SEEDS, tmp_path / "out", config)
    assert list(manifest["steps"]) == ["clean", "wordcount", "dedupe", "language", "entities", "publish"]
    assert computed(manifest)["wordcount"] == 5
    for record in records(tmp_path / "out").values():
        assert record["meta"]["word_count"] == len(record["text"].split())
        assert [s["step"] for s in record["steps"]][:2] == ["clean", "wordcount"]


@pytest.mark.slow
def test_a_failing_shard_fails_the_run(prefect_server: None, plugin: Path, tmp_path: Path) -> None:
    config = config_with_plugin(tmp_path, "fail = true")
    with pytest.raises(RuntimeError, match="wordcount was told to fail"):
        run_flow(SEEDS, tmp_path / "out", config)
    assert not (tmp_path / "out" / "jsonl").exists()


def test_unknown_step_names_the_installed_ones(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[pipeline]\nsteps = ["clean", "dedup"]\n')
    with pytest.raises(ConfigError, match=r"unknown step 'dedup'; installed steps: .*dedupe"):
        load_config(path)


def test_bad_option_names_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[pipeline]\nsteps = ["language"]\n[steps.language]\nmin_scor = 0.5\n')
    with pytest.raises(ConfigError, match=r"unknown option 'min_scor'; valid options: .*min_score"):
        load_config(path)


def test_bad_option_value_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[pipeline]\nsteps = ["publish"]\n[steps.publish]\nformats = ["csv"]\n')
    with pytest.raises(ConfigError, match=r"\[steps.publish\] option 'formats.0'.*'jsonl', 'parquet', 'sqlite' or 'postgres'"):
        load_config(path)


def test_sink_must_be_last(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[pipeline]\nsteps = ["publish", "clean"]\n')
    with pytest.raises(ConfigError, match="must be the last step"):
        load_config(path)


def test_unknown_config_section_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(textwrap.dedent('[pipeline]\nsteps = ["clean"]\n[runn]\nworkers = 2\n'))
    with pytest.raises(ConfigError, match="runn"):
        load_config(path)


SINK_PLUGIN = '''
from textmill.tasks.base import PublishReport, SinkStep


class IdList(SinkStep):
    """A sink written for the whole-corpus contract: one `publish` call with every record."""

    name = "idlist"
    version = "1"

    def publish(self, docs, out_dir, run=None):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "ids.txt").write_text("".join(f"{d.id} {d.status}\\n" for d in docs))
        return PublishReport(files=["ids.txt"])
'''


@pytest.mark.slow
def test_a_sink_that_publishes_the_whole_corpus_at_once_still_works(
    prefect_server: None, seeds_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(monkeypatch, tmp_path / "site", "textmill_idlist", SINK_PLUGIN, "idlist = textmill_idlist:IdList")
    config = tmp_path / "pipeline.toml"
    config.write_text('[pipeline]\nsteps = ["clean", "idlist"]\n[run]\nshard_size = 2\n')
    out = tmp_path / "out"

    first = run_flow(seeds_copy, out, config)
    listed = (out / "ids.txt").read_text().splitlines()
    assert listed == sorted(f"{p.name} ok" for p in seeds_copy.iterdir()), "every record, in id order, across shards"
    assert first["outputs"] == ["ids.txt", "manifest.json"] and first["documents"] == 5
    written = (out / "ids.txt").stat().st_mtime_ns
    second = run_flow(seeds_copy, out, config)
    assert computed(second)["publish"] == 0 and (out / "ids.txt").stat().st_mtime_ns == written
    (seeds_copy / "extra.txt").write_text("One more short article about the weather in the valley this week.\n")
    third = run_flow(seeds_copy, out, config)
    assert third["documents"] == 6 and len((out / "ids.txt").read_text().splitlines()) == 6
