"""Deterministic corpora of any size from a source corpus, with duplicates planted at known rates.

Each unique document takes a headline and 3-8 paragraphs from randomly chosen source articles and
replaces a share of its words with other words of the corpus, drawn by frequency,, so that re-used paragraphs stop
matching each other (a 5-word shingle survives a 15% replacement with probability 0.44) while the
text stays English prose with real names in it. Then, at the given rates, a document is a
byte-identical copy of an earlier unique one, or a near-duplicate of one: 1% of its words changed
(Jaccard about 0.9) or its last paragraphs cut off (a truncated copy, containment 1).

    python -m bench.synth SOURCE DEST --size 20000 [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

WORD = re.compile(r"[A-Za-z]{3,}")
FILES_PER_FOLDER = 1000


@dataclass
class Planted:
    """What a generated corpus holds, by construction."""

    size: int
    unique: int = 0
    exact: int = 0
    near_edit: int = 0
    near_truncated: int = 0
    bytes: int = 0
    duplicates_of: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        data = asdict(self)
        data.pop("duplicates_of")
        return data


class Source:
    """The source corpus as headlines, paragraphs and a vocabulary for word replacement."""

    def __init__(self, root: Path) -> None:
        self.headlines: list[str] = []
        self.paragraphs: list[str] = []
        words: list[str] = []
        for path in sorted(root.rglob("*.txt")):
            text = path.read_bytes().decode("utf-8", errors="replace")
            lines = [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]
            if len(lines) < 2:
                continue
            self.headlines.append(" ".join(lines[0].split()))
            self.paragraphs.extend(" ".join(p.split()) for p in lines[1:])
            words.extend(w.lower() for w in WORD.findall(text))
        if not self.paragraphs:
            raise ValueError(f"{root}: no .txt articles with a headline and paragraphs to build from")
        # Every occurrence, not the distinct words: a replacement is drawn by frequency, so it is
        # usually a common word ("said", "the") and the text stays readable.
        self.words = words

    def vary(self, text: str, rng: random.Random, share: float) -> str:
        """Replace about `share` of the words with random corpus words, keeping punctuation."""
        words = text.split(" ")
        for i, word in enumerate(words):
            if word.isalpha() and word.islower() and rng.random() < share:
                words[i] = rng.choice(self.words)
        return " ".join(words)

    def edit(self, text: str, rng: random.Random, share: float) -> str:
        """Replace exactly max(1, `share` of the replaceable words) by different words: never a no-op."""
        words = text.split(" ")
        eligible = [i for i, word in enumerate(words) if word.isalpha() and word.islower()]
        for i in rng.sample(eligible, min(len(eligible), max(1, round(share * len(eligible))))):
            replacement = words[i]
            while replacement == words[i]:
                replacement = rng.choice(self.words)
            words[i] = replacement
        return " ".join(words)

    def article(self, rng: random.Random, variation: float) -> list[str]:
        """A headline and 3-8 varied paragraphs from random source articles."""
        paragraphs = [self.vary(rng.choice(self.paragraphs), rng, variation) for _ in range(rng.randint(3, 8))]
        return [rng.choice(self.headlines), *paragraphs]


def generate(
    source: Path,
    dest: Path,
    size: int,
    seed: int = 0,
    exact_rate: float = 0.05,
    near_rate: float = 0.05,
    variation: float = 0.15,
    prefix: str = "",
) -> Planted:
    """Write `size` `.txt` files under `dest` (1,000 per folder); the same arguments give the same bytes."""
    rng = random.Random(seed)
    corpus = Source(source)
    planted = Planted(size=size)
    uniques: list[tuple[str, list[str]]] = []
    for number in range(size):
        name = f"{prefix}{number // FILES_PER_FOLDER:03d}/{number:07d}.txt"
        draw = rng.random()
        if uniques and draw < exact_rate:
            original, parts = rng.choice(uniques)
            planted.exact += 1
            planted.duplicates_of[name] = original
        elif uniques and draw < exact_rate + near_rate:
            original, parts = rng.choice(uniques)
            if rng.random() < 0.5 and len(parts) > 3:
                parts = parts[: max(3, round(len(parts) * rng.uniform(0.6, 0.9)))]
                planted.near_truncated += 1
            else:
                parts = [parts[0], *(corpus.edit(p, rng, 0.01) for p in parts[1:])]
                planted.near_edit += 1
            planted.duplicates_of[name] = original
        else:
            parts = corpus.article(rng, variation)
            uniques.append((name, parts))
            planted.unique += 1
        data = ("\n\n".join(parts) + "\n").encode("utf-8")
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted.bytes += len(data)
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    planted = generate(args.source, args.dest, args.size, args.seed)
    print(json.dumps(planted.summary(), indent=2))


if __name__ == "__main__":
    main()
