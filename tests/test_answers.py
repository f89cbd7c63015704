"""Parsing the agent's answers: DER, JWTs and bundles, never raising anything but MalformedAnswer."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import answers
from harness.certs import TestCA, make_jwt


def test_split_der_reads_long_form_lengths() -> None:
    ca, other = TestCA(), TestCA()
    assert answers.split_der(ca.der + other.der) == [ca.der, other.der]


def test_jwt_claims_round_trip() -> None:
    token = make_jwt({"sub": "spiffe://td/a", "aud": ["x"], "exp": 2e9, "iat": 1e9})
    info = answers.jwt_svid("spiffe://td/a", token, ["x"], now=1.5e9)
    assert (info.expiry, info.issued, info.serial) == (2e9, 1e9, "iat:1000000000")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_der_parsing_never_raises_anything_but_malformed(blob: bytes) -> None:
    with contextlib.suppress(answers.MalformedAnswer):
        answers.load_certificates(blob)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_jwt_parsing_never_raises_anything_but_malformed(token: str) -> None:
    with contextlib.suppress(answers.MalformedAnswer):
        answers.jwt_svid("spiffe://td/a", token, ["x"], now=0)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30), st.binary(max_size=200), max_size=4))
def test_bundle_parsing_never_raises_anything_but_malformed(bundles: dict[str, bytes]) -> None:
    for parse in (answers.jwt_bundles, answers.x509_bundles):
        with contextlib.suppress(answers.MalformedAnswer):
            parse(bundles)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
        max_leaves=10,
    )
)
def test_jwks_shapes_never_raise_anything_but_malformed(doc) -> None:
    with contextlib.suppress(answers.MalformedAnswer):
        answers.jwt_bundles({"spiffe://td": json.dumps(doc).encode()})
