"""Helpers for the notification tests: events written straight into the store, subscriptions from YAML text,
a Runtime over a test store, and a real SMTP server (aiosmtpd) on a free loopback port."""

from __future__ import annotations

import email
import email.policy
import subprocess
import textwrap
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from monitor.config import Settings
from monitor.outbox import make_outbox
from monitor.runtime import Runtime
from monitor.store import EventRow, Store
from monitor.subscriptions import Subscriptions, load_subscriptions

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""A Monday; tests run on injected clocks from here, so nothing depends on today's date."""


def event_row(identity: str, **fields: object) -> EventRow:
    values: dict = {
        "identity": identity, "regulator": "FDA", "title": f"FDA approves {identity}", "link":
        f"https://www.fda.gov/news/{identity}", "summary": "A first approval.", "published": T0, "status": "new",
        "revision": 1, "alert": True, "sources": ["fda-press"], "created_at": T0, "updated_at": T0,
        "is_atmp": True, "modality": "gene_therapy", "eu_category": "GTMP", "submodality": "aav",
        "event_type": "new_product", "products": [{"name": identity.upper(), "known": False}],
        "confidence": 0.9, "reasons": ["INN stem -parvovec → AAV vector"],
    }
    values.update(fields)
    return EventRow(**values)


def store_event(store: Store, subscriptions: Subscriptions | None, identity: str, **fields: object) -> int:
    """Insert an event the way the poll does: in one transaction with its outbox rows."""
    with store.transaction() as session:
        row = event_row(identity, **fields)
        session.add(row)
        session.flush()
        if subscriptions is not None:
            make_outbox(subscriptions)(session, row)
        return row.id


def update_event(store: Store, subscriptions: Subscriptions, event_id: int, now: datetime, **fields: object) -> None:
    """Change an event the way an update or a reclassification does, and call the outbox again."""
    with store.transaction() as session:
        row = session.get(EventRow, event_id)
        for name, value in fields.items():
            setattr(row, name, value)
        row.revision += 1
        row.status = "updated"
        row.updated_at = now
        session.flush()
        make_outbox(subscriptions)(session, row)


def load_yaml(tmp_path: Path, text: str) -> Subscriptions:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_subscriptions(path)


def runtime_for(store: Store, subscriptions: Subscriptions, tmp_path: Path) -> Runtime:
    runtime = Runtime(settings=Settings(config_dir=tmp_path, database_url=store.url, redis_url=None),
                      sources=[], baseline=[], subscriptions=subscriptions)
    runtime.store = store
    return runtime


class _Collect:
    def __init__(self, refuse: set[str]) -> None:
        self.envelopes: list[Envelope] = []
        self.peers: list[tuple] = []
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.peers.append(session.peer)
        return "250 OK"


class _FreePortController(Controller):
    """aiosmtpd's Controller on port 0: the real port is read back from the bound socket before use."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpCatcher:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self, *, starttls=None, implicit_tls=None, logins: dict[str, str] | None = None,
                 refuse: set[str] = frozenset(), port: int = 0):
        self.handler = _Collect(set(refuse))
        self.authenticator = _Authenticator(logins or {})
        options: dict = {}
        if logins is not None:
            options.update(authenticator=self.authenticator, auth_required=True)
        if starttls is not None:
            options.update(tls_context=starttls, require_starttls=True)
        if implicit_tls is not None:
            # aiosmtpd only counts STARTTLS as TLS when deciding whether to offer AUTH; this socket is TLS.
            options.update(ssl_context=implicit_tls, auth_require_tls=False)
        self.controller = _FreePortController(self.handler, hostname="127.0.0.1", port=port, **options)

    def __enter__(self) -> SmtpCatcher:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def envelopes(self) -> list[Envelope]:
        return self.handler.envelopes

    @property
    def connections(self) -> int:
        """Distinct client connections that delivered mail (told apart by the client's port)."""
        return len(set(self.handler.peers))

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.original_content, policy=email.policy.default)
                for e in self.handler.envelopes]


class _Authenticator:
    """Checks logins against `logins`; with `unavailable` set it answers 454, as a server whose own
    authentication backend is down does."""

    def __init__(self, logins: dict[str, str]):
        self.logins = logins
        self.unavailable = False

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if self.unavailable:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        ok = isinstance(auth_data, LoginPassword) and self.logins.get(auth_data.login.decode()) == \
            auth_data.password.decode()
        return AuthResult(success=ok, handled=False)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with the openssl command, so TLS is tested for real."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key
