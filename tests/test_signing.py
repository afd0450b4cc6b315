"""Webhook signatures: what we send is what a receiver's check accepts, and nothing else is."""

from __future__ import annotations

import hashlib
import hmac

from monitor.signing import sign, signature_headers, verify_signature

BODY = b'{"version":1,"type":"event"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"secret", b"1700000000." + BODY, hashlib.sha256).hexdigest()

    assert sign("secret", 1700000000, BODY) == f"sha256={expected}"


def test_headers_carry_the_delivery_id_and_verify():
    headers = signature_headers("secret", "sub:event:7", BODY, timestamp=1700000000)

    assert headers["X-ATMP-Delivery"] == "sub:event:7"
    assert headers["X-ATMP-Timestamp"] == "1700000000"
    assert verify_signature("secret", headers["X-ATMP-Timestamp"], BODY, headers["X-ATMP-Signature"],
                            now=1700000100)


def test_tampering_replay_and_garbage_are_rejected():
    header = sign("secret", 1700000000, BODY)

    assert not verify_signature("secret", 1700000000, BODY + b"x", header, now=1700000000)
    assert not verify_signature("secret", 1700000001, BODY, header, now=1700000001)
    assert not verify_signature("secret", 1700000000, BODY, header, now=1700000301)
    assert verify_signature("secret", 1700000000, BODY, header, tolerance=600, now=1700000301)
    assert not verify_signature("secret", "not-a-number", BODY, header)
    assert not verify_signature("secret", 1700000000, BODY, None, now=1700000000)
    assert not verify_signature("secret", None, BODY, header)


def test_a_fresh_signature_verifies_against_the_real_clock():
    headers = signature_headers("secret", "k", BODY)

    assert verify_signature("secret", headers["X-ATMP-Timestamp"], BODY, headers["X-ATMP-Signature"])
