"""`python -m bench.quality {clean,language,dedup,entities} --corpus PATH [--results DIR] [--limit N]`."""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from bench.common import DEFAULT_RESULTS

KINDS = {
    "clean": "main-text extraction on the Article Extraction Benchmark (textmill, trafilatura, whole page)",
    "language": "every language backend: accuracy, right-or-und on unknown languages, speed (langid/, masakhanews-dev/)",
    "dedup": "textmill's clusters checked against exact identity, Jaccard and containment",
    "entities": "entities step vs bare spaCy: speed, agreement, offsets, entities lost to cleaning",
}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    sub = main.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(KINDS) + "}")
    for kind, help_text in KINDS.items():
        cmd = sub.add_parser(kind, help=help_text, description=help_text)
        cmd.add_argument("--corpus", type=Path, required=True, help="corpus folder")
        cmd.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help=f"results folder [{DEFAULT_RESULTS}]")
        cmd.add_argument("--limit", type=int, default=None, help="use only the first N inputs (development runs)")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    from bench.quality import QualityError
    from textmill.tasks.base import ConfigError

    started = time.perf_counter()
    module = importlib.import_module(f"bench.quality.{args.kind}")
    try:
        module.run(args.corpus, args.results, args.limit, started)
    except (QualityError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
