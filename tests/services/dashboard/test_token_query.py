"""The token leaves the query string before anything can log the URL."""

from __future__ import annotations

import pytest

from services.dashboard.token_query import take_token


@pytest.mark.parametrize("name", ["token", "TOKEN", "tok%65n", "%74oken"])
def test_the_token_is_taken_out_whatever_its_encoding(name: str) -> None:
    token, query = take_token(f"{name}=eyJabc&traceparent=00-1-2-01".encode())
    assert token == "eyJabc"
    assert query == b"traceparent=00-1-2-01"


def test_other_secret_parameters_are_dropped_and_the_first_token_wins() -> None:
    token, query = take_token(b"token=first&password=p&token=second&x=1")
    assert token == "first"
    assert query == b"x=1"


def test_no_token() -> None:
    assert take_token(b"x=1") == (None, b"x=1")
    assert take_token(b"") == (None, b"")
