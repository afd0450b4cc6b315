"""Commands for the polling pipeline: poll, sources, baseline, events."""

from __future__ import annotations

from datetime import UTC, date, datetime

import typer
from sqlalchemy import select

from monitor.cli.app import app, fail_on_config_error, settings, terminal_json, terminal_safe
from monitor.config import ConfigError
from monitor.fetch import FetchError, fetch, make_client
from monitor.models import Validators
from monitor.parse import ParseError, parse_feed
from monitor.poll import SourceReport
from monitor.reclassify import reclassify as reclassify_events
from monitor.record import learned_products
from monitor.runtime import Runtime
from monitor.store import EventRow, SourceRow

sources_app = typer.Typer(help="Configured sources and their health.", no_args_is_help=True)
baseline_app = typer.Typer(help="The catalogue of products already approved.", no_args_is_help=True)
events_app = typer.Typer(help="Stored events.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(baseline_app, name="baseline")
app.add_typer(events_app, name="events")


def load_runtime() -> Runtime:
    try:
        return Runtime.load(settings())
    except ConfigError as exc:
        raise fail_on_config_error(exc) from None


def _when(value: datetime | date | None) -> str:
    if value is None:
        return "-"
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value.isoformat()


def _report_line(report: SourceReport) -> str:
    line = f"{report.source_id:<28} {report.status:<12}"
    if report.status == "ok":
        line += f" new={report.new} updated={report.updated} seen={report.seen} events={len(report.events)}"
    if report.error:
        line += f" error: {terminal_safe(report.error)}"
        line += "" if report.charged else " (not counted: every source failed at once)"
    if report.problem:
        line += f" problem: {terminal_safe(report.problem)}"
    return line


@app.command()
def poll(source: str | None = typer.Option(None, "--source", help="Poll only this source id.")) -> None:
    """Poll every enabled source once, now, and print what each one brought."""
    runtime = load_runtime()
    if source is not None:
        try:
            chosen = runtime.source(source)
        except ConfigError as exc:
            raise fail_on_config_error(exc) from None
        if not chosen.enabled:
            typer.echo(f"{source} is disabled in the config (enabled: false), so it is not polled")
    reports = runtime.poller().poll(only=source)
    for report in reports:
        typer.echo(_report_line(report))
    failed = sum(r.status == "failed" for r in reports)
    events = sum(len(r.events) for r in reports)
    typer.echo(f"{len(reports)} sources polled, {failed} failed, {events} new events")


@sources_app.command("list")
def sources_list() -> None:
    """Each source with its health: last success, consecutive failures, last error, next poll."""
    runtime = load_runtime()
    with runtime.store.transaction() as session:
        rows = {row.id: row for row in session.scalars(select(SourceRow))}
    for source in runtime.sources:
        row = rows.get(source.id)
        state = "disabled" if not source.enabled else "never polled" if row is None else (
            f"failing x{row.consecutive_failures}" if row.consecutive_failures else "healthy")
        typer.echo(f"{source.id:<28} {source.regulator:<13} every {source.interval}s  {state}")
        typer.echo(f"    {source.url}")
        if row is not None:
            typer.echo(f"    last success {_when(row.last_success_at)}  next poll {_when(row.next_poll_at)}")
            if row.last_error:
                typer.echo(f"    last error {_when(row.last_error_at)}: {terminal_safe(row.last_error)}")


@sources_app.command("check")
def sources_check() -> None:
    """Validate the config, then fetch and parse each enabled source once without storing anything."""
    runtime = load_runtime()
    failures = 0
    with make_client() as client:
        for source in (s for s in runtime.sources if s.enabled):
            try:
                result = fetch(source, Validators(), client=client)
                feed = parse_feed(source.id, result.body or b"", content_type=result.content_type, url=result.url)
            except (FetchError, ParseError) as exc:
                failures += 1
                reason = exc.reason if isinstance(exc, FetchError) else f"not a feed: {exc}"
                typer.echo(f"{source.id:<28} FAILED {terminal_safe(reason)}")
                continue
            problem = f" (problem: {terminal_safe(feed.problem)})" if feed.problem else ""
            typer.echo(f"{source.id:<28} ok     {feed.version} with {len(feed.entries)} entries{problem}")
    typer.echo(f"{len(runtime.sources)} sources configured, {failures} failed the check")
    if failures:
        raise typer.Exit(code=1)


@baseline_app.command("list")
def baseline_list(regulator: str | None = typer.Option(None, help="Only this regulator (e.g. FDA).")) -> None:
    """The baseline catalogue plus every product the service has learned since."""
    runtime = load_runtime()
    with runtime.store.transaction() as session:
        learned = learned_products(session)
    products = [(p, "baseline") for p in runtime.baseline] + [(p, "learned") for p in learned]
    for product, origin in products:
        if regulator and product.regulator.lower() != regulator.lower():
            continue
        typer.echo(f"{product.regulator:<7} {_when(product.approval_date):<10} {terminal_safe(product.trade_name):<24} "
                   f"{terminal_safe(product.proper_name) or '-':<44} {product.modality or '-':<26} {origin}")


def _event_json(event: EventRow) -> dict:
    return {
        "id": event.id, "regulator": event.regulator, "title": event.title, "link": event.link,
        "summary": event.summary, "published": _when(event.published), "status": event.status,
        "revision": event.revision, "alert": event.alert, "sources": event.sources,
        "created_at": _when(event.created_at), "is_atmp": event.is_atmp, "modality": event.modality,
        "eu_category": event.eu_category, "submodality": event.submodality, "event": event.event_type,
        "products": event.products, "confidence": event.confidence, "reasons": event.reasons,
    }


@events_app.command("list")
def events_list(
    since: datetime | None = typer.Option(None, help="Only events stored on or after this date (UTC)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    atmp_only: bool = typer.Option(False, "--atmp", help="Only events classified as ATMP."),
) -> None:
    """Stored events, oldest first."""
    runtime = load_runtime()
    query = select(EventRow).order_by(EventRow.id)
    if since is not None:
        query = query.where(EventRow.created_at >= (since if since.tzinfo else since.replace(tzinfo=UTC)))
    if atmp_only:
        query = query.where(EventRow.is_atmp.is_(True))
    with runtime.store.transaction() as session:
        events = list(session.scalars(query))
    for event in events:
        if as_json:
            typer.echo(terminal_json(_event_json(event)))
            continue
        kind = (event.event_type or "-") if event.is_atmp else "not-atmp"
        flag = "" if event.alert else " (history)"
        typer.echo(f"#{event.id:<5} {_when(event.published)[:10]:<10} {event.regulator:<7} {kind:<14} "
                   f"{terminal_safe(event.title)}{flag}")


@app.command()
def reclassify(
    notify: bool = typer.Option(
        False, "--notify", help="Queue alerts for subscriptions an event newly matches (never repeats one)."
    ),
) -> None:
    """Classify every stored event again with the current rules and catalogue; by default tells nobody."""
    runtime = load_runtime()
    outbox = runtime.poller().outbox if notify else None
    report = reclassify_events(runtime.store, runtime.baseline, outbox=outbox)
    typer.echo(f"{report.total} events reclassified, {report.changed} changed")
