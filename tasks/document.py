"""The one record type every step reads and returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Status = Literal["ok", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class Entity:
    """A named-entity mention; offsets index the document's cleaned text."""

    text: str
    label: str
    start: int
    end: int
    canonical: str | None = None


@dataclass(frozen=True, slots=True)
class Provenance:
    """Which step produced a record, at which version and options; `note` says why it did nothing."""

    step: str
    version: str
    options: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A document as it moves through the pipeline.

    Steps never mutate a Document: they return a new one with `evolve`, so a cached record
    can be shared between runs without defensive copies.
    """

    id: str
    path: str
    sha256: str
    text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    status: Status = "ok"
    reason: str | None = None
    lang: str | None = None
    lang_score: float | None = None
    entities: tuple[Entity, ...] = ()
    cluster: str | None = None
    duplicate_of: str | None = None
    steps: tuple[Provenance, ...] = ()

    def evolve(self, **changes: Any) -> Document:
        """Return a copy with `changes` applied."""
        return replace(self, **changes)

    def reject(self, reason: str) -> Document:
        """Return a rejected copy: rejected documents keep their id and say why."""
        return replace(self, status="rejected", reason=reason, cluster=None, duplicate_of=None)

    @property
    def active(self) -> bool:
        """Whether later steps should work on this document (not rejected, not a duplicate)."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The full record, including provenance, as plain JSON-able data."""
        data = asdict(self)
        data["entities"] = [asdict(e) for e in self.entities]
        data["steps"] = [asdict(p) for p in self.steps]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["entities"] = tuple(Entity(**e) for e in data.get("entities", ()))
        data["steps"] = tuple(Provenance(**p) for p in data.get("steps", ()))
        return cls(**data)

    def to_record(self) -> dict[str, Any]:
        """The published JSON Lines record (`jsonl/part-NNNNN.jsonl`: the stable public schema)."""
        return {
            "id": self.id,
            "path": self.path,
            "sha256": self.sha256,
            "status": self.status,
            "reason": self.reason,
            "text": self.text,
            "meta": self.meta,
            "lang": self.lang,
            "lang_score": self.lang_score,
            "entities": [asdict(e) for e in self.entities],
            "cluster": self.cluster,
            "duplicate_of": self.duplicate_of,
            "steps": [asdict(p) for p in self.steps],
        }
