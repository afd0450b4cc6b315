"""Email over SMTP: multipart/alternative (text and HTML from the templates), one connection per batch.

The Message-ID is derived from the delivery key, so if a crash makes us send a message twice, mail
systems that de-duplicate by Message-ID (and people's eyes) see the same message, not a new one.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from pathlib import Path
from typing import Any, Literal

from jinja2 import TemplateError, TemplateSyntaxError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.channels.base import Channel, EnvName, Notification, Outcome, SendContext, Sent, TransportError, secret
from monitor.digest import unsubscribe_target

DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}


def _address(value: str) -> str:
    address = parseaddr(value)[1]
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or any(c.isspace() for c in address):
        raise ValueError(f"not an email address: {value!r}")
    return value.strip()


class SmtpSettings(BaseModel):
    """`security`: `starttls` (upgrade a plain connection, port 587), `tls` (implicit TLS, port 465) or
    `none` (a local relay or a test catcher such as mailpit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    ca_file: Path | None = None
    timeout: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        """The port that goes with the security chosen, when none is given."""
        if isinstance(data, dict) and data.get("port") is None:
            return {**data, "port": DEFAULT_PORTS.get(data.get("security", "starttls"), 587)}
        return data

    @model_validator(mode="after")
    def _login_pair(self) -> SmtpSettings:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("give both username_env and password_env, or neither")
        return self


class EmailSettings(BaseModel):
    """The `email:` block shared by every email subscription."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    sender: str
    unsubscribe: str | None = None
    manage: str | None = None

    @field_validator("sender")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        return _address(value)

    @field_validator("unsubscribe")
    @classmethod
    def _mailto_or_web(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mailto:", "https://", "http://")):
            raise ValueError("must be a mailto: or http(s) URL; `{subscription}` is replaced by the name")
        return value

    @property
    def sender_address(self) -> str:
        return parseaddr(self.sender)[1]


class EmailTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: tuple[str, ...] = Field(min_length=1)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_address(v) for v in values)


def message_id(key: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "atmp-monitor.invalid"
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


def _single_line(text: str) -> str:
    """Headers built from feed text cannot carry a line break (header injection) or run on forever."""
    flat = " ".join(text.split())
    return flat if len(flat) <= 200 else flat[:199] + "…"


def build_message(notification: Notification, context: SendContext) -> EmailMessage:
    settings = context.config.email
    if settings is None:
        raise TransportError("no `email:` block in subscriptions.yaml", permanent=True)
    rendered = context.renderer.email(notification, settings)
    subscription = notification.subscription
    message = EmailMessage()
    message["Subject"] = _single_line(rendered.subject)
    message["From"] = settings.sender
    message["To"] = ", ".join(subscription.target.to)
    message["Date"] = format_datetime(context.now)
    message["Message-ID"] = message_id(notification.key, settings.sender)
    message["List-Id"] = f"{subscription.name} <{subscription.name}.{_list_domain(settings)}>"
    unsubscribe = unsubscribe_target(settings, subscription.name)
    if unsubscribe:
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-ATMP-Delivery"] = notification.key
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def _list_domain(settings: EmailSettings) -> str:
    """RFC 2919: a List-Id is a name under a domain the sender controls, so mail filters can key on it."""
    return "atmp-monitor." + (settings.sender_address.rpartition("@")[2] or "invalid")


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


def _open(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.security == "tls":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=_tls_context(settings))
    connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    if settings.security == "starttls":
        try:
            connection.starttls(context=_tls_context(settings))
        except smtplib.SMTPNotSupportedError:
            connection.close()
            raise TransportError("SMTP server does not offer STARTTLS (set security: tls or none)",
                                 permanent=True) from None
    return connection


def _connect_failure(exc: Exception, settings: SmtpSettings) -> TransportError:
    """Bad credentials, an untrusted certificate or a missing feature will not fix themselves: permanent.
    A login refused with a 4xx code (454: the server's own auth backend is down) is worth trying later."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return TransportError(f"SMTP login refused: {exc.smtp_code}", permanent=exc.smtp_code >= 500)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return TransportError("SMTP server does not offer login (AUTH) on this connection", permanent=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError(f"SMTP server certificate not trusted: {exc.verify_message}", permanent=True)
    return TransportError(f"cannot reach SMTP server {settings.host}:{settings.port}: {type(exc).__name__}: {exc}")


def connect(settings: SmtpSettings, environ: Mapping[str, str]) -> smtplib.SMTP:
    """An open, authenticated connection; TransportError when that cannot be had."""
    credentials = None
    if settings.username_env and settings.password_env:
        credentials = (secret(environ, settings.username_env, "SMTP user"),
                       secret(environ, settings.password_env, "SMTP password"))
    try:
        connection = _open(settings)
    except (TransportError, OSError, smtplib.SMTPException) as exc:
        raise _connect_failure(exc, settings) from None
    if credentials:
        try:
            connection.login(*credentials)
        except (OSError, smtplib.SMTPException) as exc:
            connection.close()
            raise _connect_failure(exc, settings) from None
    return connection


def _refusal(exc: smtplib.SMTPResponseException) -> TransportError:
    """5xx is the server's final word on this message; 4xx means try later."""
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return TransportError(f"SMTP {exc.smtp_code}: {text}", permanent=500 <= exc.smtp_code < 600)


def _all_refused(exc: smtplib.SMTPRecipientsRefused) -> TransportError:
    refused = ", ".join(f"{recipient} ({code})" for recipient, (code, _) in exc.recipients.items())
    permanent = all(500 <= code < 600 for code, _ in exc.recipients.values())
    return TransportError(f"every recipient refused: {refused}", permanent=permanent)


def _send_one(connection: smtplib.SMTP, message: EmailMessage) -> Sent:
    refused = connection.send_message(message)
    recipients = len(getaddresses([message["To"]]))
    note = f"; refused: {', '.join(refused)}" if refused else ""
    return Sent(f"SMTP accepted for {recipients - len(refused)} of {recipients} recipients{note}")


def _template_failure(notification: Notification, exc: TemplateError) -> TransportError:
    """A broken override template fails only the messages that use it, not the whole batch, and is retried:
    Jinja2 reloads a template whose file changed, so fixing the file is enough."""
    where = f" ({exc.filename}:{exc.lineno})" if isinstance(exc, TemplateSyntaxError) else ""
    kind = "health" if notification.kind == "health" else "digest"
    return TransportError(f"template error in {kind} email{where}: {type(exc).__name__}: {exc.message}")


def send(batch: Sequence[Notification], context: SendContext) -> list[Outcome]:
    """Every message of the batch over one SMTP connection; one outcome per notification, in order."""
    outcomes: dict[int, Outcome] = {}
    messages: list[tuple[int, EmailMessage]] = []
    for index, notification in enumerate(batch):
        try:
            messages.append((index, build_message(notification, context)))
        except TransportError as exc:
            outcomes[index] = exc
        except TemplateError as exc:
            outcomes[index] = _template_failure(notification, exc)
    if messages:
        _send_messages(context.config.email.smtp, messages, outcomes, context)
    return [outcomes[index] for index in range(len(batch))]


def _send_messages(settings: SmtpSettings, messages: list[tuple[int, EmailMessage]],
                   outcomes: dict[int, Outcome], context: SendContext) -> None:
    try:
        connection = connect(settings, context.environ)
    except TransportError as exc:
        for index, _ in messages:
            outcomes[index] = exc
        return
    lost: TransportError | None = None
    try:
        for index, message in messages:
            if lost is not None:
                outcomes[index] = lost
                continue
            try:
                outcomes[index] = _send_one(connection, message)
            except smtplib.SMTPRecipientsRefused as exc:
                outcomes[index] = _all_refused(exc)
            except smtplib.SMTPResponseException as exc:
                outcomes[index] = _refusal(exc)
            except (OSError, smtplib.SMTPException) as exc:
                lost = TransportError(f"SMTP connection lost: {type(exc).__name__}: {exc}")
                outcomes[index] = lost
    finally:
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()


def preview(notification: Notification, context: SendContext) -> dict[str, str]:
    rendered = context.renderer.email(notification, context.config.email)
    return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}


CHANNEL = Channel(target=EmailTarget, send=send, preview=preview)
