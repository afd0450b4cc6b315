"""Loading and validating the config folder.

Everything is checked before any work starts: a bad file stops the process with an error that names the
file, the line and the entry, because a half-valid config silently watching the wrong thing is worse.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG_DIR = Path("config")
DEFAULT_DATABASE_FILE = Path("var") / "atmp-monitor.db"

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")


class ConfigError(Exception):
    """The config cannot be used; the message names the file, the line and the entry."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, entry: str | None = None):
        self.path = Path(path)
        self.line = line
        self.entry = entry
        where = str(path) + (f":{line}" if line else "")
        what = f" ({entry})" if entry else ""
        super().__init__(f"{where}{what}: {message}")


def parse_duration(value: Any) -> int:
    """Seconds from an int, or from a duration such as `90s`, `15m`, `1h30m`, `1d`."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and value.strip() and (match := _DURATION.match(value)):
        days, hours, minutes, secs = (int(part or 0) for part in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 30s, 15m, 1h, 1d)")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


Duration = Annotated[int, BeforeValidator(parse_duration)]


class SourceConfig(BaseModel):
    """One feed to watch. Adding a regulator means adding one of these blocks to `sources.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    regulator: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1)
    url: str
    kind: Literal["rss", "atom", "rdf"] = "rss"
    interval: Duration = 900
    enabled: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    alert_backlog: bool = False
    timeout: float = Field(default=20.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _url_is_fetchable(cls, url: str) -> str:
        """Refused here rather than at the first fetch: a port out of range or a host that is not a valid name
        would otherwise fail every poll, with nothing in the config pointing at the cause."""
        text = url.strip()
        parts = urlsplit(text)
        if parts.scheme == "file" and parts.path:
            return text
        if parts.scheme in ("http", "https") and parts.netloc:
            try:
                _ = parts.port
                httpx.URL(text).raw_host.decode("ascii").encode("idna")
            except (ValueError, httpx.InvalidURL) as exc:
                raise ValueError(f"not a usable URL: {url!r} ({exc})") from None
            return text
        raise ValueError(f"not an http(s) or file:// URL: {url!r}")

    @field_validator("headers")
    @classmethod
    def _headers_are_valid(cls, headers: dict[str, str]) -> dict[str, str]:
        """A line break in a value would be refused by the HTTP library on every request (or, worse, start a
        header of its own); a name must be an HTTP token."""
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"not a valid header name: {name!r}")
            if any(char in value for char in "\r\n\0"):
                raise ValueError(f"header {name} has a line break or NUL in its value")
        return headers


@dataclass(frozen=True)
class Settings:
    """Where things live; from the environment so that secrets and deployment choices stay out of git."""

    config_dir: Path
    database_url: str
    redis_url: str | None

    @classmethod
    def from_env(cls, config_dir: Path | str | None = None) -> Settings:
        folder = Path(config_dir or os.environ.get("ATMP_MONITOR_CONFIG") or DEFAULT_CONFIG_DIR)
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_DATABASE_FILE}"
        return cls(config_dir=folder, database_url=database_url, redis_url=os.environ.get("REDIS_URL") or None)


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers on which line each mapping starts, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; every mapping carries its line under `__line__` (see `pop_line`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(path, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          line=mark.line + 1 if mark else None) from None
    except ValueError as exc:
        raise ConfigError(path, f"bad value: {exc}") from None


def strip_lines(value: Any) -> Any:
    """The same data without the `__line__` bookkeeping."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def read_entries(path: Path, list_key: str) -> list[tuple[int | None, dict]]:
    """The list under `list_key` in `path`, each item with its line number."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        raise ConfigError(path, f"expected a top-level `{list_key}:` list")
    unknown = sorted(set(data) - {list_key, "__line__"})
    if unknown:
        raise ConfigError(path, f"unknown top-level key(s): {', '.join(unknown)}")
    entries = []
    for position, item in enumerate(data[list_key], start=1):
        if not isinstance(item, dict):
            raise ConfigError(path, f"item {position} of `{list_key}` is not a mapping")
        entries.append((item.get("__line__"), strip_lines(item)))
    return entries


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "entry"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def _resolve_file_url(url: Any, base: Path) -> Any:
    """`file:feeds/x.xml` is relative to the config folder, so a config folder can travel with its feeds."""
    if not isinstance(url, str):
        return url
    parts = urlsplit(url.strip())
    if parts.scheme != "file" or not parts.path or parts.path.startswith("/"):
        return url
    return (base / parts.path).resolve().as_uri()


def load_sources(path: Path) -> list[SourceConfig]:
    sources: list[SourceConfig] = []
    seen: dict[str, int | None] = {}
    for line, raw in read_entries(path, "sources"):
        label = f"source {raw.get('id')!r}" if raw.get("id") else "source"
        if "url" in raw:
            raw["url"] = _resolve_file_url(raw["url"], path.parent)
        try:
            source = SourceConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(path, describe_validation_error(exc), line=line, entry=label) from None
        if source.id in seen:
            raise ConfigError(path, f"duplicate id (first defined on line {seen[source.id]})",
                              line=line, entry=label)
        seen[source.id] = line
        sources.append(source)
    return sources
