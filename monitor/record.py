"""Writing one source's diff into the store: entries, events, their classification, and what it teaches.

Runs inside the poll's transaction, so entries, events, learned products and the outbox rows written by
`outbox` either all land or none do.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from monitor.catalogue import Catalogue
from monitor.classify import Analysis, analyse
from monitor.config import SourceConfig
from monitor.diff import Change, Seen, SeenIndex, diff_entries, event_identity, link_hash, title_date_hash
from monitor.models import Entry, Product
from monitor.store import EntryRow, EventRow, ProductRow, SourceRow

Outbox = Callable[[Session, EventRow], None]

OLD_NEWS = timedelta(days=14)
"""An item first seen this long after its publication date is history: it is stored, not alerted."""

IN_CHUNK = 5_000
"""Values per `IN (...)` list: a statement takes at most 65,535 parameters on PostgreSQL (32,766 on SQLite), and
a feed may carry tens of thousands of entries."""


@dataclass
class Recorded:
    new: int = 0
    updated: int = 0
    seen: int = 0
    events: list[int] = field(default_factory=list)


def _matching(session: Session, query: Select, lookups: Iterable[tuple[InstrumentedAttribute, Collection[str]]]
              ) -> list:
    """The rows of `query` whose column holds one of its values, once each and oldest first (so that, of two rows
    sharing a link, the one first recorded is the one matched), in as many indexed look-ups as the values need."""
    found = {}
    for column, values in lookups:
        ordered = sorted(values)
        for start in range(0, len(ordered), IN_CHUNK):
            for row in session.scalars(query.where(column.in_(ordered[start:start + IN_CHUNK]))):
                found[row.id] = row
    return [found[row_id] for row_id in sorted(found)]


def _lookups(entries: Sequence[Entry]) -> list[tuple[InstrumentedAttribute, Collection[str]]]:
    """The identities of a batch that a stored entry may share: link, and title and day."""
    return [(EntryRow.link_hash, {h for e in entries if (h := link_hash(e))}),
            (EntryRow.title_date_hash, {title_date_hash(e) for e in entries})]


def seen_index(session: Session, source_id: str, entries: Sequence[Entry]) -> SeenIndex:
    """Only the stored rows of this source that could match this batch: by key, by link, by title and day."""
    index = SeenIndex()
    lookups = [(EntryRow.key, {e.key for e in entries}), *_lookups(entries)]
    for row in _matching(session, select(EntryRow).where(EntryRow.source_id == source_id), lookups):
        seen = Seen(entry_id=row.id, key=row.key, fingerprint=row.fingerprint, event_id=row.event_id)
        index.by_key[row.key] = seen
        if row.link_hash:
            index.by_link.setdefault(row.link_hash, seen)
        index.by_title_date.setdefault(row.title_date_hash, seen)
    return index


def _copy_content(row: EntryRow, entry: Entry) -> None:
    row.key = entry.key
    row.guid = entry.guid
    row.link = entry.link
    row.link_hash = link_hash(entry)
    row.title_date_hash = title_date_hash(entry)
    row.title = entry.title
    row.summary = entry.summary
    row.published = entry.published
    row.updated = entry.updated
    row.categories = list(entry.categories)
    row.fingerprint = entry.fingerprint


def apply_classification(event: EventRow, catalogue: Catalogue) -> Analysis:
    analysis = analyse(event.title, event.summary, regulator=event.regulator, catalogue=catalogue)
    result = analysis.classification
    event.is_atmp = result.is_atmp
    event.modality = result.modality
    event.eu_category = result.eu_category
    event.submodality = result.submodality
    event.event_type = result.event
    event.products = [{"name": p.name, "known": p.known} for p in result.products]
    event.confidence = result.confidence
    event.reasons = list(result.reasons)
    return analysis


def _storable(product: Product) -> bool:
    """A "name" longer than the catalogue's columns is run-on text that happened to end in a stem, not a product;
    storing it would fail the whole poll on PostgreSQL, which enforces the lengths (SQLite does not)."""
    columns = ProductRow.__table__.c
    return all(len(value or "") <= columns[name].type.length for name, value in
               (("trade_name", product.trade_name), ("proper_name", product.proper_name)))


_STORED_PRODUCT_FIELDS = ("regulator", "trade_name", "proper_name", "sponsor", "approval_date", "indication",
                          "modality", "submodality", "learned_from_event")


def learn_products(event: EventRow, analysis: Analysis, catalogue: Catalogue) -> list[Product]:
    """A detected first approval adds its products to that regulator's catalogue at once, so that the next
    entry of the same batch already knows them; `store_learned` writes them once the event has its id."""
    if not (event.is_atmp and event.event_type == "new_product"):
        return []
    learned = []
    for found in analysis.products:
        trade_name = found.trade_name or found.proper_name or found.name
        if found.known or catalogue.lookup(trade_name, event.regulator) is not None:
            continue
        product = Product(
            regulator=event.regulator,
            trade_name=trade_name,
            proper_name=found.proper_name,
            approval_date=event.published.date() if event.published else None,
            modality=found.modality or event.modality,
            submodality=found.submodality or event.submodality,
        )
        if _storable(product):
            catalogue.add(product)
            learned.append(product)
    return learned


def store_learned(session: Session, event: EventRow, products: Sequence[Product]) -> None:
    for product in products:
        fields = {name: getattr(product, name) for name in _STORED_PRODUCT_FIELDS}
        session.add(ProductRow(**(fields | {"learned_from_event": event.id})))


def learned_products(session: Session) -> list[Product]:
    return [
        Product(aliases=tuple(row.aliases or ()), **{name: getattr(row, name) for name in _STORED_PRODUCT_FIELDS})
        for row in session.scalars(select(ProductRow).order_by(ProductRow.id))
    ]


@dataclass
class _Elsewhere:
    """Events already stored from other feeds that entries of this batch may repeat."""

    by_identity: dict[str, EventRow] = field(default_factory=dict)
    by_link: dict[str, int] = field(default_factory=dict)
    by_title_date: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, source_id: str, entries: Sequence[Entry]) -> _Elsewhere:
        found = cls()
        if not entries:
            return found
        identities = [(EventRow.identity, {event_identity(e) for e in entries})]
        for event in _matching(session, select(EventRow), identities):
            found.by_identity[event.identity] = event
        for row in _matching(session, select(EntryRow).where(EntryRow.source_id != source_id), _lookups(entries)):
            if row.link_hash:
                found.by_link.setdefault(row.link_hash, row.event_id)
            found.by_title_date.setdefault(row.title_date_hash, row.event_id)
        return found

    def event_for(self, session: Session, entry: Entry) -> EventRow | None:
        """The same announcement already stored from another feed, by link or by title and day."""
        event = self.by_identity.get(event_identity(entry))
        if event is not None:
            return event
        link = link_hash(entry)
        event_id = (self.by_link.get(link) if link else None) or self.by_title_date.get(title_date_hash(entry))
        return session.get(EventRow, event_id) if event_id is not None else None


def _should_alert(source: SourceConfig, row: SourceRow, entry: Entry, now: datetime) -> bool:
    if row.initialised_at is None:
        return source.alert_backlog
    return entry.published is None or entry.published >= now - OLD_NEWS


def _oldest_first(change: Change) -> tuple[bool, datetime]:
    published = change.entry.published
    return (published is None, published or datetime.min.replace(tzinfo=UTC))


class Recorder:
    """Applies one source's changes; one instance per source poll, inside its transaction."""

    def __init__(self, session: Session, source: SourceConfig, row: SourceRow, catalogue: Catalogue,
                 outbox: Outbox | None, now: datetime):
        self.session = session
        self.source = source
        self.row = row
        self.catalogue = catalogue
        self.outbox = outbox
        self.now = now
        self.result = Recorded()
        self._published: list[tuple[EventRow, list[Product]]] = []
        self._new_events: list[EventRow] = []

    def record(self, entries: Sequence[Entry]) -> Recorded:
        """Write every change, oldest first so an approval teaches the catalogue before the news that follows it;
        then flush once and publish: per-entry flushes cost more than the parsing."""
        with self.session.no_autoflush:
            changes = diff_entries(entries, seen_index(self.session, self.source.id, entries))
            elsewhere = _Elsewhere.load(self.session, self.source.id, [c.entry for c in changes if c.kind == "new"])
            for change in sorted(changes, key=_oldest_first):
                if change.kind == "new":
                    self._new(change.entry, elsewhere)
                elif change.kind == "updated":
                    self._updated(change)
                else:
                    self._seen(change)
        self.session.flush()
        self.result.events = [event.id for event in self._new_events]
        for event, learned in self._published:
            store_learned(self.session, event, learned)
            if self.outbox is not None and event.alert:
                self.outbox(self.session, event)
        return self.result

    def _new(self, entry: Entry, elsewhere: _Elsewhere) -> None:
        self.result.new += 1
        event = elsewhere.event_for(self.session, entry)
        if event is None:
            event = EventRow(
                identity=event_identity(entry),
                regulator=self.source.regulator,
                title=entry.title,
                link=entry.link,
                summary=entry.summary,
                published=entry.published,
                alert=_should_alert(self.source, self.row, entry, self.now),
                sources=[self.source.id],
                created_at=self.now,
                updated_at=self.now,
            )
            self.session.add(event)
            elsewhere.by_identity[event.identity] = event
            self._classify_and_publish(event)
            self._new_events.append(event)
        elif self.source.id not in event.sources:
            event.sources = [*event.sources, self.source.id]
        entry_row = EntryRow(source_id=self.source.id, first_seen_at=self.now, last_seen_at=self.now)
        entry_row.event = event
        _copy_content(entry_row, entry)
        self.session.add(entry_row)

    def _updated(self, change: Change) -> None:
        self.result.updated += 1
        entry_row = self.session.get(EntryRow, change.previous.entry_id)
        _copy_content(entry_row, change.entry)
        entry_row.last_seen_at = self.now
        event = self.session.get(EventRow, entry_row.event_id)
        event.title = change.entry.title
        event.summary = change.entry.summary
        event.link = change.entry.link or event.link
        event.published = change.entry.published or event.published
        event.status = "updated"
        event.revision += 1
        event.updated_at = self.now
        self._classify_and_publish(event)

    def _seen(self, change: Change) -> None:
        self.result.seen += 1
        if change.rekeyed:
            entry_row = self.session.get(EntryRow, change.previous.entry_id)
            entry_row.key = change.entry.key
            entry_row.guid = change.entry.guid

    def _classify_and_publish(self, event: EventRow) -> None:
        analysis = apply_classification(event, self.catalogue)
        self._published.append((event, learn_products(event, analysis, self.catalogue)))
