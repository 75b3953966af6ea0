"""CoNLL-2003 scoring of the entities step: precision, recall and F1 on PER/ORG/LOC.

Each `-DOCSTART-` document becomes one text: a sentence a line, its tokens joined by spaces.
Gold and predictions are multisets of `(entity text, label)` per document; MISC is left out
(spaCy has no clean counterpart) and spaCy's labels map PERSON -> PER, ORG -> ORG and
GPE/LOC/FAC -> LOC, others dropped. Bare spaCy (`en_core_web_sm`, NER only) scores P 0.709,
R 0.594, F1 0.646 on the development split this way.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality import QualityError

FILE = "eng.testa.iob2"
SCORED = ("PER", "ORG", "LOC")
SPACY_TO_CONLL = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC"}


@dataclass(frozen=True)
class ConllDocument:
    text: str
    gold: Counter[tuple[str, str]]


def gold_entities(sentence: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`(text, label)` of each IOB2 entity in one sentence."""
    found: list[tuple[str, str]] = []
    words: list[str] = []
    label = None
    for token, tag in [*sentence, ("", "O")]:
        if tag.startswith("I-") and label == tag[2:]:
            words.append(token)
            continue
        if label is not None:
            found.append((" ".join(words), label))
        words, label = ([token], tag[2:]) if tag[:2] in ("B-", "I-") else ([], None)
    return found


def load_conll(folder: Path) -> list[ConllDocument]:
    """The documents of `folder/eng.testa.iob2` (token POS chunk NER a line)."""
    path = folder / FILE
    if not path.is_file():
        raise QualityError(f"{path} not found: the conll2003-dev corpus holds {FILE}")
    documents: list[list[list[tuple[str, str]]]] = []
    sentence: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("-DOCSTART-") or not line.strip():
            if sentence and documents:
                documents[-1].append(sentence)
            sentence = []
            if line.startswith("-DOCSTART-"):
                documents.append([])
            continue
        fields = line.split()
        sentence.append((fields[0], fields[-1]))
    if sentence and documents:
        documents[-1].append(sentence)
    return [
        ConllDocument(
            text="\n".join(" ".join(token for token, _ in s) for s in sentences),
            gold=Counter(e for s in sentences for e in gold_entities(s) if e[1] in SCORED),
        )
        for sentences in documents
    ]


def predicted(entities: list[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """spaCy `(text, label)` pairs as CoNLL `(text, label)`, unscored labels dropped."""
    return Counter((text, SPACY_TO_CONLL[label]) for text, label in entities if label in SPACY_TO_CONLL)


def prf(documents: list[ConllDocument], predictions: list[Counter[tuple[str, str]]]) -> dict[str, Any]:
    """Micro precision, recall and F1 over every document's multiset, and per label."""
    result: dict[str, Any] = {}
    for label in (None, *SCORED):
        tp = n_pred = n_gold = 0
        for doc, pred in zip(documents, predictions):
            gold = doc.gold if label is None else Counter({k: v for k, v in doc.gold.items() if k[1] == label})
            ours = pred if label is None else Counter({k: v for k, v in pred.items() if k[1] == label})
            tp += sum((gold & ours).values())
            n_pred += sum(ours.values())
            n_gold += sum(gold.values())
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        scores = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "gold": n_gold, "predicted": n_pred}
        if label is None:
            result.update(scores)
        else:
            result.setdefault("per_label", {})[label] = scores
    return result
