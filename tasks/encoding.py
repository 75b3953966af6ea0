"""Turn a file's bytes into text without ever publishing wrongly decoded text as certain.

Evidence is weighed in a fixed order: a byte order mark, then a charset the document declares
(HTML `<meta>`, XML declaration), then strict UTF-8, then a configured list of encodings or,
without one, detection among common legacy code pages. Detection on little evidence is
flagged `uncertain` rather than trusted silently.
"""
from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import chardet

DETECTOR = "chardet"
DETECTOR_VERSION = version(DETECTOR)
BINARY_SNIFF_BYTES = 8192
DECLARATION_BYTES = 4096
# Legacy code pages that detection chooses among, Western first.
DEFAULT_CANDIDATES = (
    "cp1252", "cp1250", "iso-8859-2", "cp1251", "koi8-r", "koi8-u", "iso-8859-7", "cp1253", "cp1254",
    "cp1255", "cp1256", "cp1257", "shift_jis", "euc-jp", "gb18030", "big5", "euc-kr",
)
# Below either figure the detector's choice rests on too little to trust (measured in
# docs/benchmarks.md): fewer non-ASCII bytes than this, or a lower detector confidence.
MIN_EVIDENCE_BYTES = 8
MIN_CONFIDENCE = 0.15
PRINTABLE_SHARE = 0.95
NON_ASCII_BYTES = bytes(range(0x80, 0x100))
BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
XML_DECLARATION = re.compile(rb"""^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""", re.IGNORECASE)
WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Decoded:
    """The text, the codec that produced it ("utf-8" for UTF-8), whether that was a guess on
    weak evidence, and `problem` (a rejection reason) when no text could be had."""

    text: str
    encoding: str
    uncertain: bool = False
    problem: str | None = None


def codec_name(name: str) -> str | None:
    """Python's canonical name for a text encoding label; None for no such codec (or `rot13`, `hex`)."""
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode(data: bytes, encodings: Sequence[str] = (), markup: bool = False, nul_is_binary: bool = True) -> Decoded:
    """Decode `data`; `encodings` replaces detection; `markup` reads HTML `<meta>` charsets.

    The NUL-byte sniff for binary content comes after the byte order mark, which it would
    otherwise mistake UTF-16 and UTF-32 text for.
    """
    for bom, name in BOMS:
        if data.startswith(bom):
            text = strict(data[len(bom):], name)
            if text is None:
                return failed(f"undecodable text: starts with a {name} byte order mark but is not valid {name}")
            return Decoded(text, "utf-8" if name == "utf-8" else name)
    if nul_is_binary and b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return failed("binary content: NUL bytes, not text")
    uncertain = False
    declared = declared_charset(data, markup)
    if declared is not None:
        decoded = declared_decode(data, declared)
        if decoded is not None:
            return decoded
        uncertain = True  # the document names an encoding its bytes do not fit
    text = strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", uncertain)
    if encodings:
        return configured(data, encodings, uncertain)
    return detected(data, uncertain)


def failed(problem: str) -> Decoded:
    return Decoded("", "", problem=problem)


def strict(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def plausible(text: str) -> bool:
    """Text, not control characters: what a wrong single-byte decoding of binary data gives."""
    printable = sum(ch.isprintable() or ch.isspace() for ch in text)
    return printable >= PRINTABLE_SHARE * len(text)


def declared_charset(data: bytes, markup: bool) -> str | None:
    """The charset label an XML declaration (any format) or HTML `<meta>` (markup) gives."""
    head = data[:DECLARATION_BYTES]
    match = XML_DECLARATION.search(head) or (META_CHARSET.search(head) if markup else None)
    return match.group(1).decode("ascii").lower() if match else None


def declared_decode(data: bytes, label: str) -> Decoded | None:
    """Decode as declared; None when the label is unknown or the bytes do not fit it.

    As browsers do (WHATWG Encoding), a declared ISO-8859-1 or ASCII is read as its superset
    windows-1252, and a declared UTF-16 without a byte order mark (impossible in a document
    that also declared itself in ASCII) as UTF-8.
    """
    name = codec_name(label)
    if name in ("latin-1", "iso8859-1", "ascii"):
        tries = ["cp1252", "latin-1"]
    elif name in ("utf-16", "utf-16-le", "utf-16-be"):
        tries = ["utf-8"]
    else:
        tries = [name] if name else []
    for encoding in tries:
        text = strict(data, encoding)
        if text is not None and plausible(text):
            return Decoded(text, "utf-8" if encoding in ("utf-8", "utf-8-sig") else encoding)
    return None


def configured(data: bytes, encodings: Sequence[str], uncertain: bool) -> Decoded:
    """The first configured encoding that decodes the bytes cleanly into plausible text."""
    for label in encodings:
        name = codec_name(label) or label
        text = strict(data, name)
        if text is not None and plausible(text):
            return Decoded(text, name, uncertain)
    return failed(f"undecodable text: not UTF-8 and none of [input] encodings ({', '.join(encodings)}) fits")


def detected(data: bytes, uncertain: bool) -> Decoded:
    """The detector's choice among DEFAULT_CANDIDATES, flagged uncertain on weak evidence.

    Western text that decodes cleanly in cp1252 stays cp1252 when the evidence is weak and
    the detector's choice would mix scripts inside words ("On se bat au corps б corps").
    """
    guess = chardet.detect(data, include_encodings=DEFAULT_CANDIDATES)
    name = codec_name(guess["encoding"]) if guess["encoding"] else None
    text = strict(data, name) if name else None
    non_ascii = len(data) - len(data.translate(None, NON_ASCII_BYTES))
    weak = text is None or guess["confidence"] < MIN_CONFIDENCE or non_ascii < MIN_EVIDENCE_BYTES
    if weak and name != "cp1252":
        western = strict(data, "cp1252")
        if western is not None and latin_only(western) and (text is None or mixes_scripts(text)):
            name, text = "cp1252", western
    if text is None or name is None:
        return failed("undecodable text: not UTF-8 and no other encoding fits")
    if not plausible(text):
        return failed(f"undecodable text: decoding as {name} gives mostly unprintable characters")
    if weak and not uncertain:
        uncertain = any(other not in (None, text) for other in (strict(data, c) for c in DEFAULT_CANDIDATES))
    return Decoded(text, name, uncertain)


def script(ch: str) -> str:
    """The script of a letter, from its Unicode name (LATIN, CYRILLIC, GREEK, CJK, ...)."""
    return unicodedata.name(ch, "?").split(" ", 1)[0]


def latin_only(text: str) -> bool:
    return all(script(ch) == "LATIN" for ch in text if ch.isalpha())


def mixes_scripts(text: str) -> bool:
    """Whether a word joins Latin letters with letters of another script, as a wrong code page does."""
    for word in WORD.findall(text):
        scripts = {script(ch) for ch in word if ch.isalpha()}
        if len(scripts) > 1 and "LATIN" in scripts:
            return True
    return False
