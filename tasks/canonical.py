"""Corpus-wide canonical entity names: merge case, possessive, title and short-name variants.

`putin`, `PUTIN`, `Putin's`, `President Putin` and `Vladimir Putin` are one person. Names are
grouped by `(label, normalised form)`; a one-word PERSON name joins the single multi-word PERSON
name that starts or ends with it, and stays alone when there are several (two Johnsons). Counts
are kept per distinct cleaned surface form, so memory grows with the number of distinct names,
not documents, and the result does not depend on the order the names arrive in.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable

PERSON = "PERSON"
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
POSSESSIVE = re.compile(r"(?:'s|(?<=s)')$", re.IGNORECASE)
LEADING_THE = re.compile(r"^the\s+", re.IGNORECASE)
# Quotes, brackets, dashes, bullets and the "@" of a handle are never part of a name's edges.
EDGE_PUNCT = "\"'()[]{}<>«»“”„‹›,;:*•·@#\u2010\u2011\u2012\u2013\u2014\u2015-"
# Forms of address, not names. Royal titles (King, Prince, Pope) stay: "Prince William" and
# "William" are not safely the same person. Longer titles first so "vice president" wins.
TITLES = tuple(
    sorted(
        (
            "president", "vice president", "ex-president", "former president", "prime minister",
            "pm", "chancellor", "minister", "foreign minister", "senator", "sen.", "sen",
            "rep.", "rep", "governor", "gov.", "mayor", "sir", "dame", "lord", "mr.", "mr",
            "mrs.", "mrs", "ms.", "ms",
            "miss", "dr.", "dr", "prof.", "prof", "professor", "gen.", "gen", "general",
            "col.", "colonel", "capt.", "captain", "rev.", "reverend", "judge", "justice",
        ),
        key=len,
        reverse=True,
    )
)
TITLE = re.compile(r"^(?:" + "|".join(re.escape(t) for t in TITLES) + r")(?:\s+|$)", re.IGNORECASE)


def clean_surface(text: str, label: str) -> str:
    """The name as written, minus what is not part of it: possessive, leading "the", titles."""
    name = " ".join(unicodedata.normalize("NFKC", text).translate(APOSTROPHES).split())
    name = name.strip(EDGE_PUNCT).strip()
    name = POSSESSIVE.sub("", name).rstrip()
    name = LEADING_THE.sub("", name)
    if label == PERSON:
        while True:
            shorter = TITLE.sub("", name, count=1)
            if shorter == name or not shorter:
                break
            name = shorter
    return name


def normalise(text: str, label: str) -> str:
    """The grouping form of a name: cleaned and case-folded ("" when nothing is left)."""
    return clean_surface(text, label).casefold()


def name_key(label: str, text: str) -> str | None:
    """The index key of a mention, `"LABEL\\tnormalised"`, or None for a mention with no name left."""
    norm = normalise(text, label)
    return f"{label}\t{norm}" if norm else None


def preferred_surface(counts: Counter[str]) -> str:
    """Most frequent form; on a tie, mixed case over all-caps or all-lower, then alphabetical."""
    return min(counts, key=lambda s: (-counts[s], s.isupper() or s.islower(), s))


class CanonicalIndex:
    """Accumulates name mentions, then resolves each `(label, normalised)` to one display name."""

    def __init__(self) -> None:
        self._surfaces: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    def add(self, label: str, text: str) -> None:
        """Count one mention."""
        surface = clean_surface(text, label)
        if surface:
            self._surfaces[(label, surface.casefold())][surface] += 1

    def add_all(self, mentions: Iterable[tuple[str, str]]) -> None:
        """Count `(label, text)` mentions."""
        for label, text in mentions:
            self.add(label, text)

    def counts(self) -> list[tuple[str, str, int]]:
        """`(label, cleaned surface, count)` of every form seen, sorted: what `add_counts` takes
        back, so a shard's counts are kept once and summed with the other shards'."""
        return sorted((label, surface, n) for (label, _), forms in self._surfaces.items() for surface, n in forms.items())

    def add_counts(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """Add counts exported by `counts` (surfaces already cleaned)."""
        for label, surface, n in counts:
            self._surfaces[(label, surface.casefold())][surface] += n

    def person_merges(self) -> dict[str, str]:
        """Map each one-word PERSON name to the only multi-word PERSON name it starts or ends."""
        owners: dict[str, set[str]] = defaultdict(set)
        singles: set[str] = set()
        for label, norm in self._surfaces:
            if label != PERSON:
                continue
            tokens = norm.split()
            if len(tokens) == 1:
                singles.add(norm)
            else:
                owners[tokens[0]].add(norm)
                owners[tokens[-1]].add(norm)
        return {
            single: next(iter(owners[single])) for single in singles if len(owners.get(single, ())) == 1
        }

    def resolve(self) -> dict[str, str]:
        """`{"LABEL\\tnormalised": canonical display name}` for every name seen, sorted by key."""
        merges = self.person_merges()
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for label, norm in self._surfaces:
            head = merges.get(norm, norm) if label == PERSON else norm
            groups[(label, head)].append(norm)
        canonical: dict[str, str] = {}
        for (label, _), members in groups.items():
            longest = max(members, key=lambda n: (len(n.split()), len(n), n))
            name = preferred_surface(self._surfaces[(label, longest)])
            for norm in members:
                canonical[f"{label}\t{norm}"] = name
        return dict(sorted(canonical.items()))
