"""Slack incoming webhooks with Block Kit: a header, one section per event, a context line with the reasons.

Feed text goes into mrkdwn, where `<!channel>` pings everyone and `<url|text>` makes a link: `&`, `<` and
`>` are escaped in every piece of feed text, so a title can neither ping nor forge a link. Slack refuses
a message over 50 blocks or a section over 3,000 characters, so long digests are split into several
messages; a digest interrupted half-way (Slack answers 429 quickly) resumes after the parts already sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
from pydantic import BaseModel, ConfigDict

from monitor.channels.base import Channel, EnvName, EventView, Notification, Outcome, SendContext, Sent, TransportError
from monitor.channels.base import secret as env_secret
from monitor.channels.http import make_client, post
from monitor.digest import card, group_events, notification_subject, one_line, safe_link

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_TEXT = 2000
MAX_LINK_URL = 1000

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


class SlackTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: EnvName


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def escape_within(text: str, limit: int) -> str:
    """Escaped text of at most `limit` characters, cut between characters so no entity is broken."""
    pieces: list[str] = []
    used = 0
    for ch in text:
        piece = _ESCAPES.get(ch, ch)
        if used + len(piece) > limit - 1:
            pieces.append("…")
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


def link(url: str | None, label: str, limit: int) -> str:
    """`<url|label>` for an http(s) URL, the escaped label alone otherwise."""
    target = safe_link(url)
    text = escape_within(label, limit)
    if target is None or len(target) > MAX_LINK_URL:
        return text
    quoted = target.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{quoted}|{text}>"


def _plain(text: str, limit: int = MAX_HEADER_TEXT) -> dict:
    flat = " ".join(text.split())
    return {"type": "plain_text", "text": flat if len(flat) <= limit else flat[: limit - 1] + "…", "emoji": True}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def event_blocks(event: EventView) -> list[dict]:
    """A section (linked title, modality, regulator, date, products, summary) and a context line (why)."""
    shown = card(event)
    meta = " · ".join(part for part in (shown.modality, shown.regulator, shown.date) if part)
    lines = [f"*{link(shown.link, shown.title, 600)}*" + (" _(updated)_" if shown.updated else ""), escape(meta)]
    if shown.products:
        lines.append("Products: " + escape_within(shown.products, 300))
    if shown.summary:
        lines.append(escape_within(shown.summary, 900))
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:MAX_SECTION_TEXT]}}]
    if shown.reasons:
        blocks.append(_context("Why: " + escape_within(shown.reasons, MAX_CONTEXT_TEXT - 5)))
    return blocks


def _units(notification: Notification) -> list[list[dict]]:
    """Blocks in the groups that must stay in one message (an event's section with its reasons)."""
    if notification.kind == "health":
        health = notification.health
        state = "recovered" if health.state == "recovered" else f"failing since {health.since:%Y-%m-%d %H:%M} UTC"
        text = (f"*{escape(health.source_name)}* (`{escape(health.source_id)}`, {escape(health.regulator)}) "
                f"is {state}.\n{escape_within(one_line(health.reason, 500), 1500)}")
        return [[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]]
    units: list[list[dict]] = []
    for group in group_events(notification.events) if notification.kind == "digest" else []:
        units.append([{"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"*{escape(group.heading)}* ({len(group.cards)})"}}])
        units.extend(event_blocks(event) for event in group.events)
    if notification.kind == "event":
        units.extend(event_blocks(event) for event in notification.events)
    return units


def messages(notification: Notification) -> list[dict]:
    """The Block Kit payloads for a notification, each within Slack's block limit."""
    subject = notification_subject(notification)
    title = {"digest": "ATMP digest", "event": "ATMP alert", "health": "atmp-monitor"}[notification.kind]
    footer = _context(f"atmp-monitor · subscription *{escape(notification.subscription.name)}*")
    room = MAX_BLOCKS - 2
    chunks: list[list[dict]] = [[]]
    for unit in _units(notification):
        if chunks[-1] and len(chunks[-1]) + len(unit) > room:
            chunks.append([])
        chunks[-1].extend(unit)
    payloads = []
    for number, blocks in enumerate(chunks, start=1):
        part = f" ({number}/{len(chunks)})" if len(chunks) > 1 else ""
        header = {"type": "header", "text": _plain(f"{title}{part}: {subject}")}
        payloads.append({"text": escape_within(subject + part, MAX_SECTION_TEXT),
                         "blocks": [header, *blocks, footer]})
    return payloads


def send(batch: Sequence[Notification], context: SendContext) -> list[Outcome]:
    """Posts in order; once a webhook says 429, the rest of the batch for it waits as long as it asked."""
    outcomes: list[Outcome] = []
    throttled: dict[str, TransportError] = {}
    with make_client(context.timeout) as client:
        for notification in batch:
            try:
                url = env_secret(context.environ, notification.subscription.target.url_env, "Slack webhook URL")
            except TransportError as exc:
                outcomes.append(exc)
                continue
            if url in throttled:
                outcomes.append(TransportError(f"not attempted: {throttled[url].message}",
                                               retry_after=throttled[url].retry_after,
                                               parts_sent=notification.parts_done))
                continue
            try:
                outcomes.append(_post_parts(client, url, notification))
            except TransportError as exc:
                outcomes.append(exc)
                if exc.retry_after is not None:
                    throttled[url] = exc
    return outcomes


def _post_parts(client: httpx.Client, url: str, notification: Notification) -> Sent:
    parts = messages(notification)
    done = notification.parts_done
    response = "nothing left to send"
    for index in range(done, len(parts)):
        body = json.dumps(parts[index], ensure_ascii=False).encode("utf-8")
        response = post(client, url, body, {"Content-Type": "application/json; charset=utf-8"}, parts_sent=index)
    return Sent(response, parts=len(parts))


def preview(notification: Notification, context: SendContext) -> dict[str, str]:
    return {"json": json.dumps(messages(notification), ensure_ascii=False, indent=2)}


CHANNEL = Channel(target=SlackTarget, send=send, preview=preview)
