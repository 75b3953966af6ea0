"""Language codes and writing systems: one code per language whichever detector named it, and
whether a text's script can be that language's.

Detectors label languages differently: langdetect `zh-cn`, py3langid `arz` (Egyptian Arabic),
heliport `gaz` (West Central Oromo) or private codes such as `hbsbos`. `iso_code` turns each into
ISO 639-1 where the language has a code there, else ISO 639-3, and folds a macrolanguage member
that has no ISO 639-1 code of its own into its macrolanguage (`gaz` -> `om`, `cmn` -> `zh`,
`arz` -> `ar`, `swh` -> `sw`). A member with its own ISO 639-1 code keeps it (`nb`, `id`, `hr`):
those are separate written standards, and folding them would lose what the user asked for. The
ISO 639-3 tables (SIL's, with macrolanguages) come from iso639-lang.

`dominant_script` and `written_in` are the script check: a detector that names a Latin-script
language for a text in Ethiopic or Cyrillic letters is wrong whatever its score. Each language's
usual script comes from CLDR's likely subtags (langcodes); `OTHER_SCRIPTS` adds the scripts a few
languages are also commonly written in.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache

import langcodes
from iso639 import Lang
from iso639.exceptions import DeprecatedLanguageValue, InvalidLanguageValue

UNDETERMINED = "und"

# Codes that are not ISO 639 (detector-specific variants), or that ISO 639 tables map otherwise
# than a user expects.
DETECTOR_CODES = {
    "zh-cn": "zh", "zh-tw": "zh",  # langdetect: Chinese in simplified / traditional script
    "hbsbos": "bs", "hbshrv": "hr", "hbssrp": "sr",  # heliport: Serbo-Croatian standards
    "msaind": "id", "msazsm": "ms", "msamalay": "ms", "msamin": "min",  # heliport: Malay varieties
    "estvro": "et",  # heliport: Võro, a member of the Estonian macrolanguage
    "sagb": "sg",  # heliport: a Sango variant
    "zxx": UNDETERMINED, "undhtml": UNDETERMINED,  # "no linguistic content", markup
}

# Unicode character-name prefix -> ISO 15924 script code.
SCRIPT_OF_NAME = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr",
    "ETHIOPIC": "Ethi", "DEVANAGARI": "Deva", "BENGALI": "Beng", "GURMUKHI": "Guru",
    "GUJARATI": "Gujr", "ORIYA": "Orya", "TAMIL": "Taml", "TELUGU": "Telu", "KANNADA": "Knda",
    "MALAYALAM": "Mlym", "SINHALA": "Sinh", "THAI": "Thai", "LAO": "Laoo", "TIBETAN": "Tibt",
    "MYANMAR": "Mymr", "GEORGIAN": "Geor", "ARMENIAN": "Armn", "HANGUL": "Hang",
    "HIRAGANA": "Hira", "KATAKANA": "Kana", "CJK": "Hani", "KHMER": "Khmr", "MONGOLIAN": "Mong",
    "THAANA": "Thaa", "SYRIAC": "Syrc", "CHEROKEE": "Cher", "CANADIAN": "Cans", "TIFINAGH": "Tfng",
    "NKO": "Nkoo", "VAI": "Vaii", "OL": "Olck", "BOPOMOFO": "Hani",
}
# CLDR's script codes for writing systems that mix scripts, as the letters' scripts.
SCRIPT_MIXES = {"Hans": {"Hani"}, "Hant": {"Hani"}, "Jpan": {"Hani", "Hira", "Kana"}, "Kore": {"Hang", "Hani"}}
# Scripts beyond the likely one that a language is commonly written in.
OTHER_SCRIPTS = {
    "sr": {"Latn"}, "bs": {"Cyrl"}, "uz": {"Cyrl"}, "az": {"Cyrl", "Arab"}, "tk": {"Cyrl"},
    "kk": {"Latn"}, "ky": {"Latn"}, "tt": {"Latn"}, "tg": {"Latn"}, "mn": {"Mong"}, "ku": {"Arab"},
    "pa": {"Arab"}, "sd": {"Deva"}, "ks": {"Deva"}, "ms": {"Arab"}, "ha": {"Arab"},
    "ug": {"Cyrl", "Latn"}, "zh": {"Hira", "Kana"}, "hbs": {"Cyrl"},
}
# How many leading characters the script check reads: enough to see which script dominates.
SCRIPT_SAMPLE = 2000


@lru_cache(maxsize=4096)
def iso_code(code: str) -> str:
    """ISO 639-1 where one exists, else ISO 639-3 (see the module docstring); an unknown code
    is returned lower-cased as it is."""
    code = code.strip().lower()
    if code in DETECTOR_CODES:
        return DETECTOR_CODES[code]
    if code.startswith("fin") and len(code) == 4:  # heliport's Finnish dialects: fini, fink, ...
        return "fi"
    try:
        lang = Lang(code)
    except (InvalidLanguageValue, DeprecatedLanguageValue):
        return code
    if lang.pt1:
        return lang.pt1
    macro = lang.macro()
    if macro is not None:
        return macro.pt1 or macro.pt3
    return lang.pt3


@lru_cache(maxsize=65536)
def char_script(char: str) -> str | None:
    """The ISO 15924 code of a letter's script; None for non-letters and unlisted scripts."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return SCRIPT_OF_NAME.get(name.split(" ", 1)[0])


def dominant_script(text: str) -> str | None:
    """The script of most letters among the first `SCRIPT_SAMPLE` characters; None without letters.

    Han, Hiragana and Katakana count as separate scripts, so Japanese text is dominated by one of
    them; `written_in` accepts each for `ja`.
    """
    counts: dict[str, int] = {}
    for char in text[:SCRIPT_SAMPLE]:
        script = char_script(char)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return None
    return max(sorted(counts), key=counts.__getitem__)


@lru_cache(maxsize=1024)
def scripts_of(lang: str) -> frozenset[str]:
    """Scripts `lang` is commonly written in; empty when unknown (then the check passes)."""
    try:
        likely = langcodes.Language.get(lang).maximize().script
    except (langcodes.LanguageTagError, ValueError):
        return frozenset()
    if not likely:
        return frozenset()
    return frozenset(SCRIPT_MIXES.get(likely, {likely}) | OTHER_SCRIPTS.get(lang, set()))


def written_in(lang: str, script: str | None) -> bool:
    """Whether a text whose letters are mostly in `script` can be in language `lang`."""
    if script is None or lang == UNDETERMINED:
        return True
    scripts = scripts_of(lang)
    return not scripts or script in scripts
