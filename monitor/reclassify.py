"""Re-running classification over stored events after the rules or the catalogue changed.

Each event is judged against the catalogue as it stood when the event arrived (the baseline plus the
products learned from earlier events), so the approval that taught the service a product stays a
`new_product` instead of turning into a mention of a known one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from monitor.catalogue import Catalogue
from monitor.models import Product
from monitor.record import Outbox, apply_classification, learned_products
from monitor.store import EventRow, Store

BATCH = 500


@dataclass
class Reclassified:
    total: int = 0
    changed: int = 0


def _fields(event: EventRow) -> tuple:
    return (event.is_atmp, event.modality, event.eu_category, event.submodality, event.event_type,
            event.products, round(event.confidence, 3), event.reasons)


def reclassify(store: Store, baseline: Sequence[Product], *, outbox: Outbox | None = None) -> Reclassified:
    """Without `outbox` nobody is told anything; with it, subscriptions an event newly matches are queued
    (the outbox is keyed by subscription and event, so nobody already told is told again)."""
    report = Reclassified()
    with store.transaction() as session:
        learned = learned_products(session)
    catalogue = Catalogue(baseline)
    pending = sorted((p for p in learned if p.learned_from_event is not None), key=lambda p: p.learned_from_event)
    last_id = 0
    while True:
        with store.transaction() as session:
            events = list(session.scalars(
                select(EventRow).where(EventRow.id > last_id).order_by(EventRow.id).limit(BATCH)))
            for event in events:
                while pending and pending[0].learned_from_event < event.id:
                    catalogue.add(pending.pop(0))
                before = _fields(event)
                apply_classification(event, catalogue)
                report.total += 1
                if _fields(event) != before:
                    report.changed += 1
                    if outbox is not None and event.alert:
                        outbox(session, event)
        if not events:
            return report
        last_id = events[-1].id
