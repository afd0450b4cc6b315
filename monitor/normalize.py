"""Turning what regulators publish into comparable values: links, text, dates, identities.

Feeds are written by hand-configured CMSs and change shape without notice, so every function here accepts
anything and returns a usable value or None; a bad field must never cost us the whole entry.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from urllib.parse import urlsplit, urlunsplit

_TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid",
    "mc_cid", "mc_eid", "_hsenc", "_hsmi", "hsctatracking", "cmpid", "mkt_tok", "_ga", "_gl",
    "oly_anon_id", "oly_enc_id", "vero_id", "vero_conv", "wt.mc_id", "s_cid", "ncid",
})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WHITESPACE = re.compile(r"\s+")
_TIME_ELEMENT = re.compile(r"""<time\b[^>]*?\bdatetime\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "table", "td", "th", "tr", "ul",
})
_INVISIBLE_TAGS = frozenset({"script", "style", "template", "noscript", "head", "title"})
_FIELD_SEPARATOR = "\x1f"
# Characters XML 1.0 forbids. feedparser still hands them over from broken feeds (`&#0;`), and PostgreSQL
# refuses a NUL in text: kept, one such character would fail every poll of its source.
_NOT_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# The store keeps keys in a VARCHAR(300); longer identities are kept as their hash.
MAX_KEY_LENGTH = 300


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("utm_") or lowered in _TRACKING_PARAMS


def xml_chars(text: str) -> str:
    """The text without the characters no feed may contain; everything stored from a feed passes here."""
    return _NOT_XML_CHARS.sub("", text)


def canonical_link(url: str | None) -> str | None:
    """One spelling per page, so that a re-tagged or re-wrapped link is not mistaken for a new item.

    Only http(s) links survive: anything else (javascript:, data:, mailto:) is useless as an identity
    and dangerous to put in a notification.
    """
    if not url:
        return None
    compact = _WHITESPACE.sub("", xml_chars(url))
    try:
        parts = urlsplit(compact)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    netloc = f"{userinfo}@{host}" if userinfo else host
    kept = [pair for pair in parts.query.split("&") if pair and not _is_tracking(pair.partition("=")[0])]
    return urlunsplit((scheme, netloc, parts.path or "/", "&".join(kept), ""))


class _TextCollector(HTMLParser):
    """Keeps only the character data a reader would see; markup is dropped, never interpreted."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden_depth += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.chunks.append(data)


def plain_text(html: str | None) -> str:
    """The visible text of an HTML fragment, on one line; safe to classify, still to be escaped on output."""
    if not html:
        return ""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return _one_line("".join(collector.chunks))


def _one_line(text: str | None) -> str:
    return " ".join(xml_chars(text or "").split())


def clean_title(title: str | None) -> str:
    """FDA titles arrive wrapped over several indented lines; a title is one line."""
    return _one_line(title)


def utc_from_struct(value: time.struct_time | None) -> datetime | None:
    """feedparser's `*_parsed` values are already UTC; they only lack the zone."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    except (ValueError, OverflowError, TypeError):
        return None


def _as_utc(moment: datetime) -> datetime | None:
    try:
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def utc_from_string(raw: str | None) -> datetime | None:
    """A date as a feed wrote it: RFC 822 (with US zone names), ISO 8601, or FDA's 2019 `<time datetime>`.

    A date without a zone is taken as UTC, which is what feed readers generally assume.
    """
    if not raw:
        return None
    wrapped = _TIME_ELEMENT.search(raw)
    text = wrapped.group(1) if wrapped else plain_text(raw) if "<" in raw else raw
    text = text.strip()
    if not text:
        return None
    try:
        return _as_utc(datetime.fromisoformat(text))
    except ValueError:
        pass
    try:
        return _as_utc(parsedate_to_datetime(text))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def to_utc(parsed: time.struct_time | None = None, raw: str | None = None) -> datetime | None:
    """feedparser's parsed date when it managed, else our own reading of the raw string."""
    return utc_from_struct(parsed) or utc_from_string(raw)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def fingerprint(
    title: str | None,
    summary: str | None,
    link: str | None,
    published: datetime | None,
    updated: datetime | None,
) -> str:
    """Changes exactly when a reader would see a different item, not when the markup is re-wrapped."""
    parts = (_one_line(title), _one_line(summary), canonical_link(link) or "", _iso(published), _iso(updated))
    return _sha256(_FIELD_SEPARATOR.join(parts))


def _stable_guid(guid: str | None) -> str | None:
    """A permalink guid is cleaned like a link: FDA wraps it over several lines, and GOV.UK appends the
    update time as a fragment (`page#2024-02-01T09:30:00+00:00`), which would turn every edit into a new item."""
    if not guid or not guid.strip():
        return None
    text = guid.strip()
    if text.lower().startswith(("http://", "https://")):
        return canonical_link(text) or text
    return text


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key(kind: str, value: str) -> str:
    key = f"{kind}:{value}"
    return key if len(key) <= MAX_KEY_LENGTH else f"{kind}:sha256:{_sha256(value)}"


def entry_key(guid: str | None, link: str | None, title: str | None, published: datetime | None) -> str:
    """The identity the diff remembers an item by, prefixed by its kind so that the kinds never collide.

    The publisher's guid is best; FDA items have none, so the link comes next; an item with neither is
    known only by what it says and when.
    """
    stable = _stable_guid(guid)
    if stable:
        return _key("guid", stable)
    canonical = canonical_link(link)
    if canonical:
        return _key("link", canonical)
    return "hash:" + _sha256(_FIELD_SEPARATOR.join((_one_line(title), _iso(published))))
