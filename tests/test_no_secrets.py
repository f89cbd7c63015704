"""Runs last (its `last` mark; conftest.py orders it): every log line and every metrics or status
page this test run produced holds no private key material and no JWT, in any encoding the
exporter could have used."""

from __future__ import annotations

import base64
import re

import pytest
from conftest import IN_CI, OUTPUTS, require

from exporter.client import WorkloadClient

pytestmark = pytest.mark.last

# PKCS#8 prefix of every P-256 EC private key (SPIRE's default key type), as DER hex and base64.
PKCS8_EC_P256 = bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
MARKERS = [
    "PRIVATE KEY",
    PKCS8_EC_P256.hex(),
    base64.b64encode(PKCS8_EC_P256).decode()[:48],
    base64.urlsafe_b64encode(PKCS8_EC_P256).decode()[:48],
]


def test_no_key_or_token_in_any_output_of_the_run(request) -> None:
    if len(OUTPUTS) < 50:
        if IN_CI:
            raise AssertionError("the whole suite should have produced output to search")
        require("run with the whole suite: only then has it output to search")
    text = "\n".join(OUTPUTS)
    found = [m for m in MARKERS if m in text]
    assert not found, f"key material in the run's output: {found}"
    tokens = JWT.findall(text)
    assert not tokens, f"{len(tokens)} JWTs in the run's output"
    # And the real agent's current key and token for the exporter, exactly.
    spire = request.getfixturevalue("spire")
    with WorkloadClient(f"unix://{spire.agent_socket}") as client:
        key = client.fetch_x509_svid(5).svids[0].x509_svid_key
        token = client.fetch_jwt_svid(["spire-health-exporter"], 5).svids[0].svid
    for secret in (token, token.split(".")[2], key.hex()[-64:], base64.b64encode(key).decode()[-48:]):
        assert secret not in text
    print(f"searched {len(OUTPUTS)} outputs, {len(text) / 2**20:.1f} MiB: no key material, no JWT")
