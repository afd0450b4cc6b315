"""Subscriptions (`config/subscriptions.yaml`): who is told what, through which channel, and when.

A subscription is either about events (`immediate`: one alert per event; `digest`: collected and sent on a
cron schedule in its own time zone) or about source health (`health`). Its channel-specific keys (`to:`
for email, `url_env:` for Slack...) are validated by that channel's own model from `monitor.channels`, so
adding a channel never touches this file. Everything is checked on load; an error names file, line, entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from monitor.channels import CHANNELS
from monitor.channels.base import EventView
from monitor.channels.email import EmailSettings
from monitor.config import ConfigError, Duration, describe_validation_error, read_yaml, strip_lines

MODALITIES = ("gene_therapy", "gene_modified_cell_therapy", "cell_therapy", "tissue_engineered", "combined_atmp")
EU_CATEGORIES = ("GTMP", "sCTMP", "TEP", "cATMP")
EVENT_TYPES = ("new_product", "new_indication", "recommendation", "safety", "guidance", "other")

CRON_PROBE = datetime(2000, 1, 1)
"""Where a new cron expression is first stepped from, to see that it ever fires; croniter searches decades ahead."""

Mode = Literal["immediate", "digest", "health"]
TOP_LEVEL_KEYS = ("subscriptions", "email", "templates")


def _one_of(allowed: tuple[str, ...], what: str, values: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))} (known: {', '.join(allowed)})")
    return values


class EventFilter(BaseModel):
    """Every listed criterion must hold; inside one list any value will do. An empty list does not filter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atmp_only: bool = True
    regulators: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    eu_categories: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _one_of(MODALITIES, "modality", values)

    @field_validator("eu_categories")
    @classmethod
    def _known_categories(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _one_of(EU_CATEGORIES, "EU category", values)

    @field_validator("event_types")
    @classmethod
    def _known_event_types(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _one_of(EVENT_TYPES, "event type", values)

    @field_validator("regulators", "products", "keywords")
    @classmethod
    def _casefolded(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        """Matching ignores case (`fda` = `FDA`; `Casgevy` = `CASGEVY`), so the values are stored folded."""
        return tuple(v.strip().casefold() for v in values if v.strip())

    def matches(self, event: EventView) -> bool:
        if self.atmp_only and not event.is_atmp:
            return False
        if event.confidence < self.min_confidence:
            return False
        if self.regulators and event.regulator.casefold() not in self.regulators:
            return False
        if self.modalities and event.modality not in self.modalities:
            return False
        if self.eu_categories and event.eu_category not in self.eu_categories:
            return False
        if self.event_types and event.event_type not in self.event_types:
            return False
        if self.products and not {p.name.casefold() for p in event.products} & set(self.products):
            return False
        if self.keywords:
            text = f"{event.title}\n{event.summary}".casefold()
            return any(keyword in text for keyword in self.keywords)
        return True


def _wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as a UTC instant. An ambiguous time (clocks going back) is its first
    occurrence; a time the clocks skip (going forward) is read with the offset before the change, so a
    02:30 run on that night happens at 03:30 — late, but never lost."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


class Schedule(BaseModel):
    """A cron expression read in an IANA time zone: `0 8 * * *` in Europe/Berlin is 08:00 there all year."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        """Five fields only (croniter would read a sixth as seconds), and a date that exists: `0 8 30 2 *`
        parses, but would make beat fail on its first tick, long after the config was accepted."""
        value = " ".join(value.split())
        five_fields = value.startswith("@") or len(value.split()) == 5
        if not five_fields or not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r} (five fields, e.g. '0 8 * * *' for daily at 08:00)")
        try:
            croniter(value, CRON_PROBE).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"cron expression {value!r} never fires (no such date)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after `moment` (aware), as a UTC instant.

        Cron is stepped in naive local wall time and each result converted, because stepping aware times
        across a DST change is where cron libraries go wrong."""
        zone = self.zone
        wall = moment.astimezone(zone).replace(tzinfo=None)
        runs = croniter(self.cron, wall)
        while True:
            instant = _wall_to_instant(runs.get_next(datetime), zone)
            if instant > moment:
                return instant

    def latest_at(self, moment: datetime) -> datetime:
        """The last run at or before `moment`: the slot a digest sent now is serving."""
        zone = self.zone
        wall = moment.astimezone(zone).replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        runs = croniter(self.cron, wall)
        while True:
            instant = _wall_to_instant(runs.get_prev(datetime), zone)
            if instant <= moment:
                return instant


class HealthOptions(BaseModel):
    """Which sources to watch, and how long a source must fail before anyone is told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: Duration = 3600
    sources: tuple[str, ...] = ()
    regulators: tuple[str, ...] = ()

    def covers(self, source_id: str, regulator: str) -> bool:
        if self.sources and source_id not in self.sources:
            return False
        return not self.regulators or regulator.casefold() in {r.casefold() for r in self.regulators}


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    channel: str
    mode: Mode = "immediate"
    schedule: Schedule | None = None
    filter: EventFilter = Field(default_factory=EventFilter)
    health: HealthOptions | None = None
    send_empty: bool = False
    target: SerializeAsAny[BaseModel]

    @model_validator(mode="before")
    @classmethod
    def _health_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") == "health" and data.get("health") is None:
            return {**data, "health": {}}
        return data

    @model_validator(mode="after")
    def _mode_fits(self) -> Subscription:
        given = self.model_fields_set
        if self.mode == "digest" and self.schedule is None:
            raise ValueError("a digest needs a `schedule:` (cron and timezone)")
        if self.mode != "digest" and ("schedule" in given or "send_empty" in given):
            raise ValueError("`schedule` and `send_empty` are for `mode: digest` only")
        if self.mode == "health" and "filter" in given:
            raise ValueError("a health subscription watches sources, not events: use `health:`, not `filter:`")
        if self.mode != "health" and self.health is not None:
            raise ValueError("`health:` is for `mode: health` only")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return self.schedule.zone if self.schedule else ZoneInfo("UTC")

    def wants(self, event: EventView) -> bool:
        return self.mode != "health" and self.filter.matches(event)


@dataclass(frozen=True)
class Subscriptions:
    """The whole file: subscriptions plus the settings their channels share."""

    items: tuple[Subscription, ...] = ()
    email: EmailSettings | None = None
    templates: Path | None = None
    path: Path | None = None

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, name: str) -> Subscription | None:
        return self._by_name.get(name)

    def named(self, name: str) -> Subscription:
        """The subscription called `name`; a ConfigError (naming the file) when there is none."""
        subscription = self.get(name)
        if subscription is None:
            known = ", ".join(s.name for s in self.items) or "none configured"
            raise ConfigError(self.path or "subscriptions.yaml", f"no subscription named {name!r} (known: {known})")
        return subscription

    def of_mode(self, mode: Mode) -> list[Subscription]:
        return [s for s in self.items if s.mode == mode]

    def check_sources(self, known: set[str]) -> None:
        """A health subscription naming a source id that sources.yaml lacks would silently watch nothing."""
        for subscription in self.of_mode("health"):
            unknown = [s for s in subscription.health.sources if s not in known]
            if unknown:
                raise ConfigError(self.path or "subscriptions.yaml",
                                  f"health: sources: no source with id {', '.join(map(repr, unknown))} "
                                  f"in sources.yaml", entry=f"subscription {subscription.name!r}")

    @cached_property
    def _by_name(self) -> dict[str, Subscription]:
        return {s.name: s for s in self.items}


def _located(value: Any) -> tuple[int | None, Any]:
    """A YAML node's line and its data without the line bookkeeping."""
    if isinstance(value, dict):
        return value.get("__line__"), strip_lines(value)
    return None, value


def parse_subscription(raw: Any, path: Path, line: int | None) -> Subscription:
    """One entry, with its channel-specific keys validated by the channel's own model."""
    label = f"subscription {raw.get('name')!r}" if isinstance(raw, dict) and raw.get("name") else "subscription"
    if not isinstance(raw, dict):
        raise ConfigError(path, "a subscription must be a mapping", line=line)
    channel = raw.get("channel")
    if channel not in CHANNELS:
        known = ", ".join(CHANNELS)
        raise ConfigError(path, f"channel: must be one of {known}, got {channel!r}", line=line, entry=label)
    common = set(Subscription.model_fields) - {"target"}
    target_raw = {k: v for k, v in raw.items() if k not in common}
    try:
        target = CHANNELS[channel].target.model_validate(target_raw)
        return Subscription.model_validate({**{k: v for k, v in raw.items() if k in common}, "target": target})
    except ValidationError as exc:
        raise ConfigError(path, describe_validation_error(exc), line=line, entry=label) from None


def _email_settings(data: dict, path: Path) -> EmailSettings | None:
    if data.get("email") is None:
        return None
    line, block = _located(data["email"])
    if not isinstance(block, dict):
        raise ConfigError(path, "`email:` must be a mapping (smtp, sender, ...)", line=line, entry="email")
    try:
        return EmailSettings.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(path, describe_validation_error(exc), line=line, entry="email") from None


def _templates_folder(data: dict, path: Path) -> Path | None:
    value = data.get("templates")
    if value is None:
        return None
    folder = (path.parent / str(value)).resolve()
    if not folder.is_dir():
        raise ConfigError(path, f"templates: folder {str(value)!r} not found (relative to {path.parent})",
                          entry="templates")
    return folder


def load_subscriptions(path: Path) -> Subscriptions:
    """Read and validate `subscriptions.yaml`; an empty file means no subscriptions."""
    data = read_yaml(path)
    if data is None:
        return Subscriptions(path=path)
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping with a top-level `subscriptions:` list")
    unknown = sorted(set(data) - {*TOP_LEVEL_KEYS, "__line__"})
    if unknown:
        raise ConfigError(path, f"unknown top-level key(s): {', '.join(unknown)} "
                                f"(known: {', '.join(TOP_LEVEL_KEYS)})")
    entries = data.get("subscriptions") or []
    if not isinstance(entries, list):
        raise ConfigError(path, "`subscriptions:` must be a list")
    email = _email_settings(data, path)
    items: list[Subscription] = []
    seen: dict[str, int | None] = {}
    for entry in entries:
        line, raw = _located(entry)
        subscription = parse_subscription(raw, path, line)
        label = f"subscription {subscription.name!r}"
        if subscription.name in seen:
            raise ConfigError(path, f"duplicate name (first defined on line {seen[subscription.name]})",
                              line=line, entry=label)
        if subscription.channel == "email" and email is None:
            raise ConfigError(path, "email subscriptions need a top-level `email:` block (smtp, sender)",
                              line=line, entry=label)
        seen[subscription.name] = line
        items.append(subscription)
    return Subscriptions(items=tuple(items), email=email, templates=_templates_folder(data, path), path=path)


def load_optional(path: Path) -> Subscriptions:
    """No file is no subscriptions: a service that only polls needs no notification config."""
    return load_subscriptions(path) if path.exists() else Subscriptions(path=path)
