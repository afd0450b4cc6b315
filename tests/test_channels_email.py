"""Email: a real SMTP server (aiosmtpd on loopback) receives the digest, which is parsed back and checked."""

from __future__ import annotations

import os
import socket
import ssl
import time
from datetime import timedelta

import pytest
from notifykit import T0, SmtpCatcher, load_yaml, runtime_for, self_signed_certificate, store_event
from sqlalchemy import select

from monitor.channels.email import message_id
from monitor.deliver import deliver_due, send_digest
from monitor.store import DeliveryRow

HOSTILE = "<script>alert('x')</script> <!channel> Smith & Nephew's cell sheet"


def config(port: int, smtp_extra: str = "", extra: str = "") -> str:
    return f"""
email:
  smtp: {{host: 127.0.0.1, port: {port}, security: none{smtp_extra}}}
  sender: "ATMP Monitor <atmp@example.org>"
  unsubscribe: "mailto:atmp-admin@example.org?subject=unsubscribe%20{{subscription}}"
  manage: "Write to atmp-admin@example.org to change subscription {{subscription}}."
{extra}
subscriptions:
  - name: ra-weekly
    channel: email
    to: [ra-team@example.org, qa@example.org]
    mode: digest
    schedule: {{cron: "0 8 * * MON", timezone: Europe/Berlin}}
  - name: ra-now
    channel: email
    to: ops@example.org
    filter: {{event_types: [new_product]}}
"""


def immediate_error(store, event_id: int) -> str | None:
    with store.transaction() as session:
        return session.scalar(select(DeliveryRow.last_error).where(DeliveryRow.kind == "event",
                                                                   DeliveryRow.event_id == event_id))


@pytest.fixture
def smtp():
    with SmtpCatcher() as catcher:
        yield catcher


def digest_events(store, subscriptions) -> None:
    store_event(store, subscriptions, "casgevy", regulator="FDA", products=[{"name": "CASGEVY", "known": False}],
                modality="gene_modified_cell_therapy", published=T0 - timedelta(days=1))
    store_event(store, subscriptions, "durveqtix", regulator="EMA", products=[{"name": "Durveqtix", "known": False}])
    store_event(store, subscriptions, "holoclar", regulator="FDA", event_type="new_indication", title=HOSTILE,
                link="javascript:alert(1)", modality="tissue_engineered",
                summary="Expanded & <b>bold</b> claims", reasons=["phrase 'expands approval' → new_indication"])


def test_the_digest_arrives_as_multipart_with_groups_escaping_and_list_headers(sqlite_store, smtp, tmp_path):
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(smtp.port)), tmp_path)
    digest_events(sqlite_store, runtime.subscriptions)

    result = send_digest(runtime, "ra-weekly", now=T0)

    assert (result.status, result.events) == ("sent", 3)
    (message,) = smtp.messages()
    assert message["Subject"] == "2 new ATMP approvals, 1 label expansion — FDA, EMA"
    assert message.get_content_type() == "multipart/alternative"
    assert sorted(smtp.envelopes[0].rcpt_tos) == ["qa@example.org", "ra-team@example.org"]
    assert message["List-Unsubscribe"].strip() == "<mailto:atmp-admin@example.org?subject=unsubscribe%20ra-weekly>"
    assert message["Message-ID"] == message_id("ra-weekly:digest:1", "atmp@example.org")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()

    assert text.index("New ATMP approvals (2)") < text.index("CASGEVY") < text.index("Label expansions (1)")
    assert text.index("Label expansions (1)") < text.index("Smith & Nephew")
    assert "Why: phrase 'expands approval' → new_indication" in text
    assert html.index("New ATMP approvals (2)") < html.index("Label expansions (1)")
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &lt;!channel&gt; Smith &amp; Nephew" in html
    assert "Expanded &amp; &lt;b&gt;bold&lt;/b&gt; claims" in html
    assert "javascript:" not in html
    assert 'href="https://www.fda.gov/news/casgevy"' in html
    assert "Gene-modified cell therapy" in html and "Tissue-engineered" in html
    for part in (text, html):
        assert "ra-weekly" in part
        assert "Write to atmp-admin@example.org to change subscription ra-weekly." in part


def test_immediate_alerts_of_one_run_share_one_connection(sqlite_store, smtp, tmp_path):
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(smtp.port)), tmp_path)
    for name in ("casgevy", "lyfgenia", "elevidys"):
        store_event(sqlite_store, runtime.subscriptions, name, products=[{"name": name.upper(), "known": False}])

    assert deliver_due(runtime, now=T0).sent == 3

    assert len(smtp.messages()) == 3
    assert smtp.connections == 1
    assert smtp.messages()[0]["Subject"] == "New ATMP approval: CASGEVY — FDA"


def test_a_template_in_the_override_folder_replaces_the_shipped_one(sqlite_store, smtp, tmp_path):
    overrides = tmp_path / "my-templates"
    overrides.mkdir()
    (overrides / "digest.txt").write_text("Our house style: {{ subject }} for {{ subscription }}\n")
    (overrides / "layout.html").write_text("<table>{% block content %}{% endblock %}</table><p>House frame</p>\n")
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(smtp.port, extra="templates: my-templates")),
                          tmp_path)
    digest_events(sqlite_store, runtime.subscriptions)

    send_digest(runtime, "ra-weekly", now=T0)

    (message,) = smtp.messages()
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == (
        "Our house style: 2 new ATMP approvals, 1 label expansion — FDA, EMA for ra-weekly\n")
    html = message.get_body(("html",)).get_content()
    assert "New ATMP approvals (2)" in html and "House frame" in html


def test_a_broken_override_template_fails_only_its_own_messages_until_fixed(sqlite_store, smtp, tmp_path):
    overrides = tmp_path / "my-templates"
    overrides.mkdir()
    broken = overrides / "health.txt"
    broken.write_text("{{ health.no_such_field }}\n")
    ops = "  - {name: ops, channel: email, to: [ops@example.org], mode: health}\n"
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(smtp.port, extra="templates: my-templates") + ops),
                          tmp_path)
    store_event(sqlite_store, runtime.subscriptions, "casgevy")
    payload = {"source_id": "ema-news", "source_name": "EMA news", "regulator": "EMA", "state": "failing",
               "reason": "HTTP 503", "since": T0.isoformat(), "at": T0.isoformat()}
    with sqlite_store.transaction() as session:
        session.add(DeliveryRow(idempotency_key="ops:health:1:failing", subscription="ops", channel="email",
                                kind="health", payload=payload, status="pending", attempts=0))

    report = deliver_due(runtime, now=T0)

    assert (report.sent, report.retrying) == (1, 1)
    assert [m["Subject"] for m in smtp.messages()] == ["New ATMP approval: CASGEVY — FDA"]
    with sqlite_store.transaction() as session:
        error = session.scalar(select(DeliveryRow.last_error).where(DeliveryRow.kind == "health"))
    assert error.startswith("template error in health email: UndefinedError:")

    broken.write_text("Fixed: {{ subject }}\n")
    os.utime(broken, (time.time() + 10, time.time() + 10))
    assert deliver_due(runtime, now=T0 + timedelta(hours=1)).sent == 1
    assert smtp.messages()[-1].get_body(("plain",)).get_content().startswith("Fixed: Source ema-news (EMA) is failing")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def _server_tls(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the socket itself is TLS
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_login_from_the_environment(sqlite_store, tmp_path, certificate, monkeypatch, security):
    monkeypatch.setenv("TEST_SMTP_USER", "atmp")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "correct horse")
    tls = {("starttls" if security == "starttls" else "implicit_tls"): _server_tls(certificate)}
    with SmtpCatcher(logins={"atmp": "correct horse"}, **tls) as catcher:
        smtp_extra = (f", security: {security}, ca_file: {certificate[0]}, "
                      "username_env: TEST_SMTP_USER, password_env: TEST_SMTP_PASSWORD")
        runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(catcher.port, smtp_extra)), tmp_path)
        store_event(sqlite_store, runtime.subscriptions, "casgevy")

        assert deliver_due(runtime, now=T0).sent == 1
        assert len(catcher.messages()) == 1

        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
        event_id = store_event(sqlite_store, runtime.subscriptions, "lyfgenia")
        assert deliver_due(runtime, now=T0).failed == 1
        assert immediate_error(sqlite_store, event_id) == "SMTP login refused: 535"

        monkeypatch.setenv("TEST_SMTP_PASSWORD", "correct horse")
        catcher.authenticator.unavailable = True
        event_id = store_event(sqlite_store, runtime.subscriptions, "elevidys")
        assert deliver_due(runtime, now=T0).retrying == 1
        assert immediate_error(sqlite_store, event_id) == "SMTP login refused: 454"


def test_unreachable_server_is_retried_and_refused_mailbox_fails_for_good(sqlite_store, tmp_path):
    with SmtpCatcher(refuse={"ops@example.org"}) as catcher:
        port = catcher.port
        runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(port)), tmp_path)
        refused = store_event(sqlite_store, runtime.subscriptions, "casgevy")
        assert deliver_due(runtime, now=T0).failed == 1
    assert immediate_error(sqlite_store, refused) == "every recipient refused: ops@example.org (550)"

    unreachable = store_event(sqlite_store, runtime.subscriptions, "lyfgenia")
    assert deliver_due(runtime, now=T0).retrying == 1
    assert immediate_error(sqlite_store, unreachable).startswith(f"cannot reach SMTP server 127.0.0.1:{port}")


def test_a_digest_queued_while_the_server_is_down_is_sent_whole_once_it_is_up(sqlite_store, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(port)), tmp_path)
    digest_events(sqlite_store, runtime.subscriptions)

    assert send_digest(runtime, "ra-weekly", now=T0).status == "retrying"
    store_event(sqlite_store, runtime.subscriptions, "roctavian")  # arrives meanwhile: waits for the next digest
    with SmtpCatcher(port=port) as catcher:
        assert deliver_due(runtime, now=T0 + timedelta(hours=1)).sent == 4  # the digest and 3 immediate alerts
        assert deliver_due(runtime, now=T0 + timedelta(hours=2)).sent == 0

    (digest,) = [m for m in catcher.messages() if "ra-team@example.org" in m["To"]]
    assert digest["Subject"] == "2 new ATMP approvals, 1 label expansion — FDA, EMA"
    assert "roctavian" not in digest.get_body(("plain",)).get_content()


def test_a_unicode_subject_is_encoded_and_a_line_break_in_feed_text_cannot_add_a_header(sqlite_store, smtp, tmp_path):
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(smtp.port)), tmp_path)
    store_event(sqlite_store, runtime.subscriptions, "x", products=[],
                title="Thérapie génique — 再生医療製品\r\nBcc: victim@example.org")

    assert deliver_due(runtime, now=T0).sent == 1

    (message,) = smtp.messages()
    headers = smtp.envelopes[0].original_content.split(b"\r\n\r\n", 1)[0]
    assert message["Subject"] == "New ATMP approval: Thérapie génique — 再生医療製品 Bcc: victim@example.org — FDA"
    assert headers.isascii() and b"=?utf-8?" in headers
    assert message["Bcc"] is None and b"\nBcc:" not in headers
    assert smtp.envelopes[0].rcpt_tos == ["ops@example.org"]


def test_a_missing_login_variable_fails_with_its_name(sqlite_store, smtp, tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_SMTP_USER", raising=False)
    smtp_extra = ", username_env: TEST_SMTP_USER, password_env: TEST_SMTP_PASSWORD"
    runtime = runtime_for(sqlite_store, load_yaml(tmp_path, config(smtp.port, smtp_extra)), tmp_path)
    event_id = store_event(sqlite_store, runtime.subscriptions, "casgevy")

    assert deliver_due(runtime, now=T0).failed == 1
    assert immediate_error(sqlite_store, event_id) == "environment variable TEST_SMTP_USER (SMTP user) is not set"
