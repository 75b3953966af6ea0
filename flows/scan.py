"""Discovery's scan of the corpus, and the ad hoc run's scan ahead of its flow.

An ad hoc run waits for its temporary Prefect server (`flows/apiserver.py`) for seconds after
the CLI's own imports and checks; discovery's scan (a stat per file, a hash per new or changed
file) fits in that wait. So the CLI scans while the server boots (`scan_ahead`) and the flow's
`discover` task takes that scan (`take_scan`) instead of scanning again; runs started any other
way (a deployment, the flow called from Python) scan in the task as before.

A scan ahead only reads: it loads the file-hash cache but does not save it. The `discover`
task saves it, under the output folder's lock. A scan taken a few seconds before the flow
started is what a scan at the flow's start would have found a few seconds earlier: its files
are read by the read tasks afterwards, as always.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textmill.flows.shard import Paths
from textmill.tasks.filehashes import FileHashes
from textmill.tasks.read import DiscoveryReport, SourceFile, discover


@dataclass
class CorpusScan:
    """What discovery found: the input files, what was passed over, and the file-hash cache to
    save once the run holds the output folder."""

    sources: list[SourceFile]
    report: DiscoveryReport
    hashes: FileHashes
    ahead: bool = False


def scan_corpus(corpus: str, out: str, cache_path: Path) -> CorpusScan:
    """Find every input file under `corpus` (not descending into `out`), hashing only those
    whose stat changed since the scan cached at `cache_path`."""
    root = Path(corpus)
    if not root.is_dir():
        raise NotADirectoryError(f"corpus folder not found: {corpus}")
    report = DiscoveryReport()
    hashes = FileHashes.load(cache_path, root)
    sources = list(discover(root, exclude=Path(out), report=report, hashes=hashes))
    report.hashed, report.unchanged = hashes.hashed, hashes.reused
    return CorpusScan(sources, report, hashes)


_ahead: dict[tuple[str, str], CorpusScan] = {}


def scan_key(corpus: str | Path, out: str | Path) -> tuple[str, str]:
    return str(Path(corpus).resolve()), str(Path(out).resolve())


def scan_ahead(corpus: Path, out: Path) -> None:
    """Scan now, for this process's next flow run over `corpus` into `out`. A failure is left
    for the `discover` task to meet again, and report, with its retries."""
    corpus_dir, out_dir = str(corpus.resolve()), str(out.resolve())
    try:
        scan = scan_corpus(corpus_dir, out_dir, Paths(corpus=corpus_dir, out=out_dir).file_hashes)
    except Exception:  # noqa: BLE001 - the discover task scans again and fails there
        return
    scan.ahead = True
    _ahead[scan_key(corpus, out)] = scan


def scan_found_changes(corpus: Path, out: Path, more_files_than: int = 0) -> bool:
    """Whether the scan made ahead found files that are new, changed or gone since the last
    scan (so the run will read or drop documents), in a corpus of more than `more_files_than`
    files; True when there is no scan to ask. A file read again only because its entry was
    racily clean, with the same bytes, is no change."""
    scan = _ahead.get(scan_key(corpus, out))
    if scan is None:
        return True
    hashes = scan.hashes
    changed = hashes.changed > 0 or hashes.hashed + hashes.reused < len(hashes.previous)
    return changed and len(scan.sources) > more_files_than


def scanned_files(corpus: Path, out: Path) -> int | None:
    """How many files the scan made ahead found (None: no scan)."""
    scan = _ahead.get(scan_key(corpus, out))
    return None if scan is None else len(scan.sources)


def take_scan(corpus: str, out: str) -> CorpusScan | None:
    """The scan made ahead for this flow run, once; None when there is none."""
    return _ahead.pop(scan_key(corpus, out), None)
