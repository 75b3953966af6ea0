"""`python -m bench.encodings --corpus ../shared/corpora/langid`: encoding detectors compared.

Sentences of the langid corpus, alone and as paragraphs of five, are written in the legacy code
pages of their language; a detector is right when its decoding gives back exactly the text
written (latin-1 text read as cp1252 is right). Only texts with a non-ASCII byte count, and
none with C1 control characters (a few corpus lines hold mis-decoded quotes). textmill's own
decoding is also scored for the wrong decodings it flags `uncertain` and those it does not.
"""
from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_RESULTS, markdown_table, write_results
from textmill.tasks.encoding import DEFAULT_CANDIDATES, decode

CODE_PAGES = {
    "fr": ("cp1252", "latin-1"), "de": ("cp1252", "latin-1"), "es": ("cp1252",), "it": ("cp1252",),
    "pt": ("cp1252",), "nl": ("cp1252",), "sv": ("cp1252", "latin-1"), "fi": ("cp1252",),
    "cs": ("cp1250", "iso-8859-2"), "pl": ("cp1250", "iso-8859-2"), "tr": ("cp1254",),
    "ru": ("cp1251", "koi8-r"), "uk": ("cp1251", "koi8-u"), "el": ("iso-8859-7", "cp1253"),
    "ar": ("cp1256",), "ja": ("shift_jis", "euc-jp"), "zh": ("gb18030",), "ko": ("euc-kr",),
}
C1 = re.compile("[\x80-\x9f]")
Sample = tuple[str, str, str, str, bytes]  # language, code page, granularity, text, bytes


def samples(corpus: Path, per_kind: int) -> list[Sample]:
    """Up to `per_kind` paragraphs and `per_kind` single sentences per language and code page."""
    out: list[Sample] = []
    for lang, pages in CODE_PAGES.items():
        lines = [line for line in (corpus / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
        paragraphs = [" ".join(lines[i : i + 5]) for i in range(0, len(lines) - 5, 5)]
        for page in pages:
            for kind, texts in (("paragraph", paragraphs), ("sentence", lines[1::7])):
                taken = 0
                for text in texts:
                    data = encoded(text, page)
                    if data is None or data.isascii() or C1.search(text):
                        continue
                    out.append((lang, page, kind, text, data))
                    taken += 1
                    if taken == per_kind:
                        break
    return out


def encoded(text: str, page: str) -> bytes | None:
    try:
        return text.encode(page)
    except UnicodeEncodeError:
        return None


def decoded_as(data: bytes, encoding: str | None) -> str | None:
    try:
        return data.decode(encoding) if encoding else None
    except (UnicodeDecodeError, LookupError):
        return None


def detectors() -> dict[str, Callable[[bytes], tuple[str | None, bool]]]:
    """Name -> function giving (decoded text or None, flagged uncertain); missing libraries skipped."""
    found: dict[str, Callable[[bytes], tuple[str | None, bool]]] = {}
    try:
        from charset_normalizer import from_bytes

        def normalizer(data: bytes, **options: Any) -> tuple[str | None, bool]:
            best = from_bytes(data, **options).best()
            return (str(best) if best is not None else None), False

        found["charset-normalizer, defaults"] = normalizer
        found["charset-normalizer, cp_isolation=candidates"] = lambda d: normalizer(d, cp_isolation=list(DEFAULT_CANDIDATES))
        found["charset-normalizer, preemptive_behaviour=False"] = lambda d: normalizer(d, preemptive_behaviour=False)
    except ImportError:
        pass
    try:
        import cchardet

        found["cchardet"] = lambda d: (decoded_as(d, cchardet.detect(d)["encoding"]), False)
    except ImportError:
        pass
    try:
        import chardet

        found["chardet, defaults"] = lambda d: (decoded_as(d, chardet.detect(d)["encoding"]), False)
        found["chardet, include_encodings=candidates"] = lambda d: (
            decoded_as(d, chardet.detect(d, include_encodings=DEFAULT_CANDIDATES)["encoding"]), False
        )
    except ImportError:
        pass

    def textmill(data: bytes) -> tuple[str | None, bool]:
        result = decode(data)
        return (None if result.problem else result.text), result.uncertain

    found["textmill decode (chardet + cp1252 rule + uncertainty)"] = textmill
    return found


def measure(corpus: Path, per_kind: int) -> dict[str, Any]:
    data = samples(corpus, per_kind)
    rows = []
    for name, detect in detectors().items():
        row: dict[str, Any] = {"detector": name}
        started = time.perf_counter()
        wrong: dict[str, int] = {}
        for kind in ("paragraph", "sentence"):
            subset = [s for s in data if s[2] == kind]
            right = flagged_wrong = flagged = 0
            for lang, page, _, text, raw in subset:
                out, uncertain = detect(raw)
                right += out == text
                flagged += uncertain
                flagged_wrong += uncertain and out != text
                if out != text:
                    wrong[f"{lang}/{page}"] = wrong.get(f"{lang}/{page}", 0) + 1
            row[f"{kind}s"] = len(subset)
            row[f"{kind} accuracy"] = right / len(subset)
            row[f"{kind} silent wrong"] = len(subset) - right - flagged_wrong
            row[f"{kind} uncertain"] = flagged
        row["ms per text"] = 1000 * (time.perf_counter() - started) / len(data)
        row["wrong by language/code page"] = dict(sorted(wrong.items(), key=lambda kv: -kv[1]))
        rows.append(row)
    return {"samples": len(data), "per_kind": per_kind, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    headers = ["detector", "paragraph accuracy", "paragraph silent wrong", "sentence accuracy", "sentence silent wrong", "uncertain (par./sent.)", "ms per text"]
    return markdown_table(headers, [
        [r["detector"], r["paragraph accuracy"], r["paragraph silent wrong"], r["sentence accuracy"],
         r["sentence silent wrong"], f"{r['paragraph uncertain']}/{r['sentence uncertain']}", r["ms per text"]]
        for r in result["rows"]
    ])


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python -m bench.encodings", description=__doc__)
    args.add_argument("--corpus", type=Path, required=True, help="the langid corpus folder (<lang>.txt)")
    args.add_argument("--per-kind", type=int, default=15, help="paragraphs and sentences per language and code page")
    args.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help=f"results folder [{DEFAULT_RESULTS}]")
    options = args.parse_args(argv)
    result = measure(options.corpus, options.per_kind)
    table = markdown(result)
    write_results(options.results, "encodings", result, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
