"""Generic webhooks: a documented, versioned JSON payload, signed with the subscription's secret.

Payload (version 1), one POST per notification, `Content-Type: application/json`:

    {
      "version": 1,
      "type": "event" | "digest" | "health",
      "delivery": "<stable id, also in X-ATMP-Delivery>",
      "subscription": "<subscription name>",
      "title": "<what is inside, e.g. '3 new ATMP approvals, 1 label expansion — FDA, EMA'>",
      "created_at": "<ISO 8601 UTC>",
      "events": [                                   # "event": one item; "digest": all of them; "health": []
        {"id": 12, "regulator": "FDA", "title": "...", "link": "https://...", "summary": "...",
         "published": "2023-12-08T00:00:00+00:00" | null, "is_atmp": true, "event_type": "new_product",
         "modality": "gene_modified_cell_therapy", "eu_category": "GTMP", "submodality": "crispr",
         "products": [{"name": "CASGEVY", "known": false}], "confidence": 0.93,
         "reasons": ["..."], "revision": 1}
      ],
      "incident": null | {"source_id": "...", "source_name": "...", "regulator": "...",
                          "state": "failing" | "recovered", "reason": "...", "since": "...", "at": "..."}
    }

Headers: X-ATMP-Delivery, X-ATMP-Timestamp, X-ATMP-Signature (see `monitor.signing`, whose
`verify_signature` is what a receiver calls). Feed text is passed as it came: escape it where you show it.
New fields may be added within version 1; a change of meaning gets a new version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from monitor.channels.base import Channel, EnvName, EventView, Notification, Outcome, SendContext, Sent, TransportError
from monitor.channels.base import secret as env_secret
from monitor.channels.http import make_client, post
from monitor.digest import notification_subject
from monitor.signing import signature_headers

PAYLOAD_VERSION = 1


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: EnvName
    secret_env: EnvName


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def event_json(event: EventView) -> dict:
    return {
        "id": event.id, "regulator": event.regulator, "title": event.title, "link": event.link,
        "summary": event.summary, "published": _iso(event.published), "is_atmp": event.is_atmp,
        "event_type": event.event_type, "modality": event.modality, "eu_category": event.eu_category,
        "submodality": event.submodality, "products": [{"name": p.name, "known": p.known} for p in event.products],
        "confidence": round(event.confidence, 3), "reasons": list(event.reasons), "revision": event.revision,
    }


def payload(notification: Notification) -> dict:
    health = notification.health
    return {
        "version": PAYLOAD_VERSION,
        "type": notification.kind,
        "delivery": notification.key,
        "subscription": notification.subscription.name,
        "title": notification_subject(notification),
        "created_at": _iso(notification.created_at),
        "events": [event_json(e) for e in notification.events],
        "incident": None if health is None else {
            "source_id": health.source_id, "source_name": health.source_name, "regulator": health.regulator,
            "state": health.state, "reason": health.reason, "since": _iso(health.since), "at": _iso(health.at),
        },
    }


def body(notification: Notification) -> bytes:
    return json.dumps(payload(notification), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def send(batch: Sequence[Notification], context: SendContext) -> list[Outcome]:
    outcomes: list[Outcome] = []
    with make_client(context.timeout) as client:
        for notification in batch:
            target = notification.subscription.target
            try:
                url = env_secret(context.environ, target.url_env, "webhook URL")
                key = env_secret(context.environ, target.secret_env, "webhook signing secret")
                content = body(notification)
                headers = {"Content-Type": "application/json; charset=utf-8",
                           **signature_headers(key, notification.key, content)}
                outcomes.append(Sent(post(client, url, content, headers)))
            except TransportError as exc:
                outcomes.append(exc)
    return outcomes


def preview(notification: Notification, context: SendContext) -> dict[str, str]:
    return {"json": json.dumps(payload(notification), ensure_ascii=False, indent=2)}


CHANNEL = Channel(target=WebhookTarget, send=send, preview=preview)
