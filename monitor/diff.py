"""Deciding what is new: each parsed entry against what this source has already delivered.

Feeds re-publish items with fresh guids, edit them in place, and carry the same announcement on several
feeds. The diff looks an entry up by its key, then by its canonical link, then by its title and date, so
that none of those produce a second event; an edited item is `updated`, never `new`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from monitor.models import Entry

ChangeKind = Literal["new", "updated", "seen"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link_hash(entry: Entry) -> str | None:
    return _sha(entry.link) if entry.link else None


def title_date_hash(entry: Entry) -> str:
    """Title (case and spacing ignored) plus publication day: the identity of an item with no guid or link."""
    day = entry.published.date().isoformat() if entry.published else ""
    return _sha(" ".join(entry.title.lower().split()) + "|" + day)


def event_identity(entry: Entry) -> str:
    """How one announcement is recognised across sources: its canonical link, else its title and day."""
    link = link_hash(entry)
    return f"link:{link}" if link else f"title:{title_date_hash(entry)}"


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store remembers of an entry it has already recorded."""

    entry_id: int
    key: str
    fingerprint: str
    event_id: int


@dataclass(slots=True)
class SeenIndex:
    """The already-recorded entries of one source that could match this batch, by each kind of identity."""

    by_key: dict[str, Seen] = field(default_factory=dict)
    by_link: dict[str, Seen] = field(default_factory=dict)
    by_title_date: dict[str, Seen] = field(default_factory=dict)

    def find(self, entry: Entry) -> Seen | None:
        link = link_hash(entry)
        return (
            self.by_key.get(entry.key)
            or (self.by_link.get(link) if link else None)
            or self.by_title_date.get(title_date_hash(entry))
        )


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    entry: Entry
    previous: Seen | None = None

    @property
    def rekeyed(self) -> bool:
        """The feed re-published a known item under a new key; the store must follow the new key."""
        return self.previous is not None and self.previous.key != self.entry.key


def diff_entries(entries: Iterable[Entry], seen: SeenIndex) -> list[Change]:
    """One change per distinct entry, in feed order; repeats of an item inside one feed count once."""
    changes: list[Change] = []
    batch = SeenIndex()
    for entry in entries:
        if batch.find(entry) is not None:
            continue
        previous = seen.find(entry)
        if previous is None:
            kind: ChangeKind = "new"
        elif previous.fingerprint != entry.fingerprint:
            kind = "updated"
        else:
            kind = "seen"
        changes.append(Change(kind, entry, previous))
        marker = Seen(entry_id=-1, key=entry.key, fingerprint=entry.fingerprint, event_id=-1)
        batch.by_key[entry.key] = marker
        if (link := link_hash(entry)) is not None:
            batch.by_link[link] = marker
        batch.by_title_date[title_date_hash(entry)] = marker
    return changes
