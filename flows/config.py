"""Load and validate `pipeline.toml`: which steps run, in which order, with which options.

Every mistake is found here, before any work starts, and reported as a ConfigError that
names the valid choices.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from textmill.tasks.base import ConfigError, SinkStep, Step
from textmill.tasks.encoding import codec_name
from textmill.tasks.registry import build_step, load_registry

DEFAULT_CONFIG = Path("config") / "pipeline.toml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineSection(Section):
    steps: list[str] = Field(min_length=1, description="Steps in the order they run; the sink last.")


class InputSection(Section):
    max_bytes: int = Field(10_000_000, gt=0, description="Larger files are rejected, not read.")
    encodings: list[str] = Field(
        default_factory=list,
        description="Encodings to try, in order, for files that are not UTF-8 and declare none "
        "(e.g. [\"cp1251\", \"koi8-r\"]); empty: detect among common code pages.",
    )

    @field_validator("encodings")
    @classmethod
    def known_codecs(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if codec_name(name) is None]
        if unknown:
            raise ValueError(f"unknown encoding {', '.join(map(repr, unknown))} (use Python codec names such as cp1252, koi8-r)")
        return names


class RunSection(Section):
    shard_size: int = Field(
        500, gt=0,
        description="Files per new shard (one task per step); a file keeps its shard, new files fill new shards.",
    )
    max_shards: int = Field(
        64, gt=0,
        description="Shards a corpus is spread over before new shards grow past shard_size: each shard task "
        "costs Prefect a few milliseconds even when Cached, so a large corpus gets larger shards.",
    )
    workers: int | None = Field(
        None, gt=0,
        description="Shard tasks run at once: worker processes (processes, or a local Dask cluster; default: "
        "cores), or threads (default: cores, at most 4).",
    )
    runner: Literal["processes", "threads", "dask"] = Field(
        "processes",
        description="processes: a worker process per core on this machine; threads: one process; "
        "dask: Dask worker processes (a local cluster, or dask_address).",
    )
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786.")
    retries: int = Field(3, ge=0, description="Retries of a task after a transient failure.")
    retry_delay_seconds: float = Field(1.0, ge=0, description="First retry delay; doubles each retry.")
    retry_jitter_factor: float = Field(0.5, ge=0, description="Random spread added to each delay.")
    lock_timeout: float = Field(
        0, ge=0,
        description="Seconds to wait for another run on the same output folder to finish (0: fail at once).",
    )
    keep_runs: int = Field(
        3, ge=1,
        description="Runs whose cached results are kept; after each run the store drops what older runs alone used.",
    )


class ConfigFile(Section):
    pipeline: PipelineSection
    input: InputSection = InputSection()
    run: RunSection = RunSection()
    steps: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class StepSpec:
    """What a worker needs to rebuild a step: small and picklable, unlike a loaded model."""

    name: str
    scope: str
    version: str
    fingerprint: str
    options: dict[str, Any]
    config_dir: str


@dataclass(frozen=True)
class PipelineConfig:
    path: Path
    digest: str
    input: InputSection
    run: RunSection
    steps: tuple[StepSpec, ...]


def resolve_config_path(path: str | Path | None) -> Path:
    """An explicit path, else `config/pipeline.toml` in the working folder, else the packaged default."""
    if path is not None:
        return Path(path)
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    return Path(str(files("textmill.config") / "pipeline.toml"))


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Read, validate and build every configured step (which also validates its options)."""
    cfg_path = resolve_config_path(path)
    try:
        raw_bytes = cfg_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {cfg_path}: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: invalid TOML: {exc}") from None
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{cfg_path}: {problems}") from None

    registry = load_registry()
    config_dir = cfg_path.resolve().parent
    for name in parsed.steps:
        if name not in registry and name not in registry.broken:
            raise ConfigError(
                f"{cfg_path}: [steps.{name}] configures an unknown step; installed: {', '.join(sorted(registry))}"
            )
    steps = [build_step(name, parsed.steps.get(name, {}), registry, config_dir) for name in parsed.pipeline.steps]
    check_order(steps, cfg_path)
    for step in steps:
        step.check()
    return PipelineConfig(
        path=cfg_path,
        digest=hashlib.sha256(raw_bytes).hexdigest(),
        input=parsed.input,
        run=parsed.run,
        steps=tuple(spec_of(step) for step in steps),
    )


def check_run_paths(corpus: str, out: str) -> tuple[Path, Path]:
    """The corpus and output folders, resolved; ConfigError for a path that would make a run wrong.

    An empty path (an unset variable in a deployment) would otherwise mean the working folder;
    an output folder that is, or contains, the corpus would be read back as input.
    """
    if not str(corpus).strip():
        raise ConfigError("the corpus path is empty; give the folder to process (prefect.yaml: TEXTMILL_CORPUS)")
    if not str(out).strip():
        raise ConfigError("the output path is empty; give the output folder (prefect.yaml: TEXTMILL_OUT)")
    corpus_dir, out_dir = Path(corpus).resolve(), Path(out).resolve()
    if not corpus_dir.is_dir():
        raise ConfigError(f"corpus folder not found: {corpus}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"the output folder {out} is a file")
    if out_dir == corpus_dir:
        raise ConfigError(f"the output folder {out} is the corpus itself; choose a folder outside the corpus")
    if corpus_dir.is_relative_to(out_dir):
        raise ConfigError(f"the corpus {corpus} lies inside the output folder {out}; choose a folder outside the corpus")
    return corpus_dir, out_dir


def publish_to_postgres(cfg: PipelineConfig, dsn: str) -> PipelineConfig:
    """`cfg` with its publish step also writing to the PostgreSQL database `dsn`."""
    registry = load_registry()
    steps = []
    found = False
    for spec in cfg.steps:
        if spec.name == "publish":
            found = True
            options = dict(spec.options)
            options["formats"] = [*options.get("formats", []), *([] if "postgres" in options.get("formats", []) else ["postgres"])]
            options["postgres_dsn"] = dsn
            spec = spec_of(build_step("publish", options, registry, Path(spec.config_dir)))
        steps.append(spec)
    if not found:
        raise ConfigError(f"{cfg.path}: --publish needs the publish step in pipeline.steps")
    return replace(cfg, steps=tuple(steps))


def check_order(steps: list[Step], cfg_path: Path) -> None:
    """Each step at most once; a sink, if any, only last."""
    names = [s.name for s in steps]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{cfg_path}: pipeline.steps lists {', '.join(repeated)} more than once")
    for step in steps[:-1]:
        if isinstance(step, SinkStep):
            raise ConfigError(f"{cfg_path}: the sink step {step.name!r} must be the last step")


def spec_of(step: Step) -> StepSpec:
    return StepSpec(
        name=step.name,
        scope=step.scope,
        version=step.version,
        fingerprint=step.fingerprint(),
        options=step.options.model_dump(mode="json"),
        config_dir=str(step.config_dir),
    )
