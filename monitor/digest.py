"""What a notification says: events grouped by type (new products first), a subject that tells what is
inside, and the email bodies rendered from Jinja2 templates.

HTML templates are autoescaped: feed titles and summaries are untrusted and arrive here verbatim. Links
are shown only for http(s) URLs, so a `javascript:` link in a feed never becomes clickable. Any template
can be overridden by a file of the same name in the folder named by `templates:` in subscriptions.yaml.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from monitor.channels.base import EventView, Notification

if TYPE_CHECKING:
    from monitor.channels.email import EmailSettings

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

GROUP_ORDER: tuple[str | None, ...] = (
    "new_product", "new_indication", "recommendation", "safety", "guidance", "other", None,
)
COUNT_WORDS: dict[str | None, tuple[str, str]] = {
    "new_product": ("new ATMP approval", "new ATMP approvals"),
    "new_indication": ("label expansion", "label expansions"),
    "recommendation": ("recommendation", "recommendations"),
    "safety": ("safety notice", "safety notices"),
    "guidance": ("guidance update", "guidance updates"),
    "other": ("other ATMP update", "other ATMP updates"),
    None: ("other announcement", "other announcements"),
}
HEADINGS: dict[str | None, str] = {
    "new_product": "New ATMP approvals",
    "new_indication": "Label expansions",
    "recommendation": "Recommendations and opinions",
    "safety": "Safety",
    "guidance": "Guidance and policy",
    "other": "Other ATMP news",
    None: "Other announcements",
}
MODALITY_LABELS = {
    "gene_therapy": "Gene therapy",
    "gene_modified_cell_therapy": "Gene-modified cell therapy",
    "cell_therapy": "Cell therapy",
    "tissue_engineered": "Tissue-engineered",
    "combined_atmp": "Combined ATMP",
}
MODALITY_COLOURS = {
    "gene_therapy": "#1d5fa8",
    "gene_modified_cell_therapy": "#6b3fa0",
    "cell_therapy": "#1f7a4d",
    "tissue_engineered": "#a3561b",
    "combined_atmp": "#8a1f3d",
}
NEUTRAL_COLOUR = "#5c6670"
SUMMARY_LINE = 220


def one_line(text: str | None, limit: int = SUMMARY_LINE) -> str:
    """Whitespace collapsed and cut at a word boundary: a summary that fits on a line of a digest."""
    flat = " ".join((text or "").split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] or flat[:limit]
    return cut.rstrip(",;:.") + "…"


def safe_link(url: str | None) -> str | None:
    """Only http(s) links are shown as links; anything else (javascript:, data:) is dropped."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def event_key(event: EventView) -> str | None:
    """The group an event belongs in: non-ATMP events (for subscriptions that ask for them) go last."""
    if not event.is_atmp:
        return None
    return event.event_type if event.event_type is not None and event.event_type in HEADINGS else "other"


def count_phrase(event_type: str | None, count: int) -> str:
    singular, plural = COUNT_WORDS[event_type]
    return f"{count} {singular if count == 1 else plural}"


@dataclass(frozen=True, slots=True)
class EventCard:
    """One event as a digest line shows it; every field is plain text, escaped by the template."""

    title: str
    products: str
    modality: str
    colour: str
    regulator: str
    date: str
    link: str | None
    summary: str
    reasons: str
    updated: bool


@dataclass(frozen=True, slots=True)
class Group:
    event_type: str | None
    heading: str
    events: tuple[EventView, ...]
    cards: tuple[EventCard, ...]


def card(event: EventView) -> EventCard:
    products = ", ".join(f"{p.name}{'' if p.known else ' (new)'}" for p in event.products)
    return EventCard(
        title=one_line(event.title, 300),
        products=products,
        modality=MODALITY_LABELS.get(event.modality or "", "Not classified as ATMP" if not event.is_atmp else "ATMP"),
        colour=MODALITY_COLOURS.get(event.modality or "", NEUTRAL_COLOUR),
        regulator=event.regulator,
        date=event.published.date().isoformat() if event.published else "undated",
        link=safe_link(event.link),
        summary=one_line(event.summary),
        reasons=one_line("; ".join(event.reasons), 400),
        updated=event.revision > 1,
    )


def _newest_first(event: EventView) -> tuple[float, int]:
    return (-(event.published.timestamp() if event.published else 0.0), -event.id)


def group_events(events: Iterable[EventView]) -> list[Group]:
    by_type: dict[str | None, list[EventView]] = {}
    for event in events:
        by_type.setdefault(event_key(event), []).append(event)
    groups = []
    for kind in GROUP_ORDER:
        if kind in by_type:
            ordered = tuple(sorted(by_type[kind], key=_newest_first))
            groups.append(Group(kind, HEADINGS[kind], ordered, tuple(card(e) for e in ordered)))
    return groups


def regulators_of(events: Sequence[EventView]) -> list[str]:
    """Most-mentioned regulator first; ties alphabetically, so the subject is stable."""
    counts = Counter(e.regulator for e in events)
    return sorted(counts, key=lambda regulator: (-counts[regulator], regulator))


def subject_line(events: Sequence[EventView]) -> str:
    """What is inside, e.g. "3 new ATMP approvals, 1 label expansion — FDA, EMA"."""
    if not events:
        return "No new ATMP events"
    counts = Counter(event_key(e) for e in events)
    what = ", ".join(count_phrase(kind, counts[kind]) for kind in GROUP_ORDER if counts[kind])
    return f"{what} — {', '.join(regulators_of(events))}"


def alert_subject(event: EventView) -> str:
    singular = COUNT_WORDS[event_key(event)][0]
    about = ", ".join(p.name for p in event.products) or one_line(event.title, 90)
    return f"{singular[0].upper()}{singular[1:]}: {about} — {event.regulator}"


def health_subject(notification: Notification) -> str:
    health = notification.health
    if health.state == "recovered":
        return f"Source {health.source_id} ({health.regulator}) has recovered"
    return f"Source {health.source_id} ({health.regulator}) is failing: {one_line(health.reason, 90)}"


def notification_subject(notification: Notification) -> str:
    if notification.kind == "health":
        return health_subject(notification)
    if notification.kind == "event" and len(notification.events) == 1:
        return alert_subject(notification.events[0])
    return subject_line(notification.events)


def unsubscribe_target(settings: EmailSettings | None, subscription: str) -> str | None:
    if settings is None:
        return None
    if settings.unsubscribe:
        return settings.unsubscribe.replace("{subscription}", quote(subscription))
    return f"mailto:{settings.sender_address}?subject={quote('unsubscribe ' + subscription)}"


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def _local_time(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%d %b %Y, %H:%M %Z")


class Renderer:
    """Jinja2 environments over the user's override folder (first) and the shipped templates."""

    def __init__(self, override: Path | None = None):
        folders = [str(override)] if override else []
        loader = ChoiceLoader([FileSystemLoader([*folders, str(DEFAULT_TEMPLATES)])])
        self.env = Environment(
            loader=loader,
            autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml"), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def _context(self, notification: Notification, settings: EmailSettings | None) -> dict:
        subscription = notification.subscription
        return {
            "subject": notification_subject(notification),
            "kind": notification.kind,
            "subscription": subscription.name,
            "mode": subscription.mode,
            "generated": _local_time(notification.created_at, subscription.zone),
            "groups": group_events(notification.events),
            "count": len(notification.events),
            "health": notification.health,
            "manage": (settings.manage or "").replace("{subscription}", subscription.name) if settings else "",
            "unsubscribe": unsubscribe_target(settings, subscription.name),
        }

    def email(self, notification: Notification, settings: EmailSettings | None = None) -> RenderedEmail:
        context = self._context(notification, settings)
        base = "health" if notification.kind == "health" else "digest"
        return RenderedEmail(
            subject=context["subject"],
            text=self.env.get_template(f"{base}.txt").render(context),
            html=self.env.get_template(f"{base}.html").render(context),
        )
