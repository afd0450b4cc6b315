"""Plain data passed between the pipeline stages (sources → fetch → parse → diff → classify → store → notify).

Each stage takes and returns these, so a stage can be tested, swapped or benchmarked alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

FetchStatus = Literal["not_modified", "unchanged", "fetched"]


@dataclass(frozen=True, slots=True)
class Validators:
    """What the last good fetch of a source left behind, sent back so an unchanged feed costs nothing."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    status: FetchStatus
    url: str
    validators: Validators
    body: bytes | None = None
    content_type: str | None = None
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One feed item, normalised so that the diff never has to look at feed-format details."""

    source_id: str
    key: str
    guid: str | None
    link: str | None
    title: str
    summary: str
    published: datetime | None
    updated: datetime | None
    categories: tuple[str, ...]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    version: str
    entries: list[Entry]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """A product a regulator has already approved; `learned_from_event` is set when the service taught itself."""

    regulator: str
    trade_name: str
    proper_name: str | None = None
    aliases: tuple[str, ...] = ()
    sponsor: str | None = None
    approval_date: date | None = None
    indication: str | None = None
    modality: str | None = None
    learned_from_event: int | None = None
    submodality: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ProductMention:
    name: str
    known: bool


@dataclass(frozen=True, slots=True)
class Classification:
    is_atmp: bool
    modality: str | None = None
    eu_category: str | None = None
    submodality: str | None = None
    event: str | None = None
    products: list[ProductMention] = field(default_factory=list)
    confidence: float = 0.0
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "is_atmp": self.is_atmp,
            "modality": self.modality,
            "eu_category": self.eu_category,
            "submodality": self.submodality,
            "event": self.event,
            "products": [{"name": p.name, "known": p.known} for p in self.products],
            "confidence": round(self.confidence, 3),
            "reasons": list(self.reasons),
        }
