"""Commands for notifications: deliver, digest preview/send, deliveries list/retry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from sqlalchemy import select

from monitor.channels import CHANNELS, Notification
from monitor.channels.base import EventView
from monitor.cli.app import app, fail_on_config_error, terminal_safe
from monitor.cli.poll import load_runtime
from monitor.config import ConfigError
from monitor.deliver import (
    DeliveryLine,
    deliver_due,
    deliver_one,
    due_digests,
    list_deliveries,
    retry,
    send_context,
    send_digest,
)
from monitor.runtime import Runtime
from monitor.store import DeliveryRow, EventRow
from monitor.subscriptions import Subscription

digest_app = typer.Typer(help="Digest subscriptions: preview or send one now.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Notification deliveries: what was sent, what failed.", no_args_is_help=True)
app.add_typer(digest_app, name="digest")
app.add_typer(deliveries_app, name="deliveries")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else "-"


def _digest(runtime: Runtime, name: str) -> Subscription:
    try:
        subscription = runtime.subscriptions.named(name)
    except ConfigError as exc:
        raise fail_on_config_error(exc) from None
    if subscription.mode != "digest":
        typer.secho(f"subscription {name!r} is not a digest (mode: {subscription.mode})", err=True,
                    fg=typer.colors.RED)
        raise typer.Exit(code=2)
    return subscription


@app.command()
def deliver() -> None:
    """Send what is due now: pending and retry-due deliveries, then any digest whose time has come."""
    runtime = load_runtime()
    now = datetime.now(UTC)
    report = deliver_due(runtime, now=now)
    typer.echo(f"deliveries: {report.sent} sent, {report.retrying} will retry, {report.failed} failed"
               + (f", {report.dropped} dropped (no longer matching)" if report.dropped else "")
               + (f", {report.reaped} recovered from a stopped sender" if report.reaped else ""))
    for name in due_digests(runtime, now):
        result = send_digest(runtime, name, now=now)
        typer.echo(f"digest {name}: {result.status} ({result.events} events)")
    if report.failed:
        typer.echo("see `atmp-monitor deliveries list --failed`")


def _queued_events(runtime: Runtime, subscription: Subscription) -> tuple[EventView, ...]:
    with runtime.store.transaction() as session:
        rows = session.scalars(
            select(EventRow).join(DeliveryRow, DeliveryRow.event_id == EventRow.id)
            .where(DeliveryRow.subscription == subscription.name, DeliveryRow.kind == "digest_item",
                   DeliveryRow.status == "queued").order_by(EventRow.id)
        )
        views = (EventView.from_row(row) for row in rows)
        return tuple(view for view in views if subscription.wants(view))


@digest_app.command("preview")
def digest_preview(
    name: str = typer.Argument(..., help="The digest subscription's name."),
    out: Path | None = typer.Option(None, "--out", help="Write the HTML (or, for Slack/webhooks, JSON) here."),
) -> None:
    """Render the digest as it would go out now, without sending it or marking anything sent."""
    runtime = load_runtime()
    subscription = _digest(runtime, name)
    now = datetime.now(UTC)
    notification = Notification(key=f"{name}:digest:preview", kind="digest", subscription=subscription,
                                created_at=now, events=_queued_events(runtime, subscription))
    parts = CHANNELS[subscription.channel].preview(notification, send_context(runtime, now))
    if "subject" in parts:
        typer.echo(f"Subject: {terminal_safe(parts['subject'])}")
    if out is not None:
        out.write_text(parts.get("html") or parts["json"], encoding="utf-8")
        typer.echo(f"{len(notification.events)} events; written to {out}")
        return
    typer.echo("\n".join(terminal_safe(line) for line in (parts.get("text") or parts["json"]).splitlines()))


@digest_app.command("send")
def digest_send(name: str = typer.Argument(..., help="The digest subscription's name.")) -> None:
    """Send this digest now, whatever its schedule; events already sent in a digest are not sent again."""
    runtime = load_runtime()
    _digest(runtime, name)
    result = send_digest(runtime, name, force=True)
    typer.echo(f"digest {name}: {result.status} ({result.events} events)")
    if result.status in ("failed", "retrying"):
        raise typer.Exit(code=1)


def _line(line: DeliveryLine) -> str:
    when = _when(line.sent_at) if line.status == "sent" else (
        f"retry at {_when(line.next_attempt_at)}" if line.next_attempt_at else "-")
    text = (f"#{line.id:<6} {_when(line.created_at)}  {line.subscription:<24} {line.channel:<8} {line.kind:<7} "
            f"{line.status:<8} attempts={line.attempts:<2} {when}  {terminal_safe(line.about)[:80]}")
    if line.last_error and line.status != "sent":
        text += f"\n         error: {terminal_safe(line.last_error)}"
    return text


@deliveries_app.command("list")
def deliveries_list(
    failed: bool = typer.Option(False, "--failed", help="Only failed deliveries (retrying or given up)."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
) -> None:
    """Recent deliveries, newest first, with the reason of every failure."""
    runtime = load_runtime()
    lines = list_deliveries(runtime, failed_only=failed, limit=limit)
    for line in lines:
        typer.echo(_line(line))
    if not lines:
        typer.echo("no failed deliveries" if failed else "no deliveries yet")


@deliveries_app.command("retry")
def deliveries_retry(ids: list[int] = typer.Argument(None, help="Delivery ids; all failed ones if none given.")
                     ) -> None:
    """Send failed deliveries again now (after fixing what made them fail)."""
    runtime = load_runtime()
    chosen = retry(runtime, ids or ())
    if not chosen:
        typer.echo("nothing to retry")
        return
    statuses = {delivery_id: deliver_one(runtime, delivery_id) for delivery_id in chosen}
    for delivery_id, status in statuses.items():
        typer.echo(f"#{delivery_id}: {status}")
    if any(status not in ("sent", "dropped") for status in statuses.values()):
        raise typer.Exit(code=1)
