"""What every channel shares: the notification it is handed, the context it sends in, how it reports back.

A channel never touches the database: `monitor.deliver` claims rows, hands the channel a batch of
`Notification`s, and records each `Sent` or `TransportError` it gets back. `permanent` is the one decision
a channel makes about a failure: retrying will not help (a 400, a refused address, a missing secret).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

from monitor.models import ProductMention
from monitor.store import EventRow

if TYPE_CHECKING:
    from monitor.digest import Renderer
    from monitor.subscriptions import Subscription, Subscriptions

EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=100)]
"""The name of an environment variable holding a secret; the secret itself never appears in config."""


class TransportError(Exception):
    """A send that did not happen; `retry_after` is the receiver's own wish (seconds), when it said one."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None, *,
                 parts_sent: int = 0):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.parts_sent = parts_sent


@dataclass(frozen=True, slots=True)
class Sent:
    """What the receiver answered; `parts` counts the messages a split notification took."""

    response: str
    parts: int = 1


Outcome = Sent | TransportError


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as notifications show it: a detached copy, so rendering never reaches back into a session."""

    id: int
    regulator: str
    title: str
    link: str | None
    summary: str
    published: datetime | None
    is_atmp: bool
    modality: str | None
    eu_category: str | None
    submodality: str | None
    event_type: str | None
    products: tuple[ProductMention, ...]
    confidence: float
    reasons: tuple[str, ...]
    revision: int
    status: str

    @classmethod
    def from_row(cls, row: EventRow) -> EventView:
        return cls(
            id=row.id, regulator=row.regulator, title=row.title, link=row.link, summary=row.summary or "",
            published=row.published, is_atmp=bool(row.is_atmp), modality=row.modality,
            eu_category=row.eu_category, submodality=row.submodality, event_type=row.event_type,
            products=tuple(ProductMention(name=p["name"], known=bool(p.get("known"))) for p in row.products or ()),
            confidence=float(row.confidence or 0.0), reasons=tuple(row.reasons or ()), revision=row.revision or 1,
            status=row.status or "new",
        )


@dataclass(frozen=True, slots=True)
class HealthView:
    """A source-health incident as it was when the alert was queued."""

    source_id: str
    source_name: str
    regulator: str
    state: Literal["failing", "recovered"]
    reason: str
    since: datetime
    at: datetime


@dataclass(frozen=True)
class Notification:
    """One thing to tell one subscription; `key` is the delivery's stable id, the receiver's de-duplication key."""

    key: str
    kind: Literal["event", "digest", "health"]
    subscription: Subscription
    created_at: datetime
    events: tuple[EventView, ...] = ()
    health: HealthView | None = None
    parts_done: int = 0


@dataclass(frozen=True)
class SendContext:
    config: Subscriptions
    renderer: Renderer
    environ: Mapping[str, str]
    now: datetime
    timeout: float = 20.0


@dataclass(frozen=True)
class Channel:
    """A registry entry: the model of a subscription's channel-specific keys, and how to send and preview."""

    target: type[BaseModel]
    send: Callable[[Sequence[Notification], SendContext], list[Outcome]]
    preview: Callable[[Notification, SendContext], dict[str, str]]


def secret(environ: Mapping[str, str], name: str, what: str) -> str:
    """A secret from the environment; missing is permanent (retrying cannot set it), but retryable by hand."""
    value = environ.get(name, "").strip()
    if not value:
        raise TransportError(f"environment variable {name} ({what}) is not set", permanent=True)
    return value
