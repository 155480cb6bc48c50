"""The flow view's guard in process: Host names, tokens, settings that refuse to start."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from omni_trace.flowview.api import create_app
from omni_trace.flowview.guard import host_name, presented_token
from omni_trace.flowview.settings import FlowViewSettings
from omni_trace.stack.ports import is_loopback

TOKEN = "t" * 32
DEAD_JAEGER = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:16687", "127.0.0.1"),
        ("LocalHost.:80", "localhost"),
        ("[::1]:16687", "::1"),
        ("[::1]", "::1"),
        ("evil.example:16687:1", "evil.example:16687:1"),  # not a name:port: never allowed
        ("", ""),
    ],
)
def test_host_names_compare_without_port_case_or_trailing_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def _basic(user_password: bytes) -> str:
    return "Basic " + base64.b64encode(user_password).decode()


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer   {TOKEN} ", TOKEN),
        (_basic(f"anyone:{TOKEN}".encode()), TOKEN),
        (_basic(f":{TOKEN}".encode()), TOKEN),
        (_basic(b"no-colon"), None),
        (_basic(b"\xff\xfe:x"), None),
        ("Basic not base64!", None),
        ("Digest abc", None),
        ("Bearer", None),
        ("", None),
    ],
)
def test_the_token_comes_as_bearer_or_basic_password(header: str, token: str | None) -> None:
    assert presented_token(header) == token


def test_off_loopback_no_token_no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWVIEW_ACCESS_TOKEN", "FLOWVIEW_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "flowview"):
        with pytest.raises(ValidationError, match="FLOWVIEW_ACCESS_TOKEN is required"):
            FlowViewSettings(host=host)
    assert FlowViewSettings(host="10.1.2.3", access_token=TOKEN).token() == TOKEN  # type: ignore[arg-type]
    assert [is_loopback(h) for h in ("127.0.0.2", "::1", "[::1]", "localhost")] == [True] * 4
    # The bound host is answered too, a wildcard is no name; a list replaces the defaults.
    assert FlowViewSettings(host="127.0.0.1").host_names() == ["127.0.0.1", "localhost", "::1"]
    assert FlowViewSettings(host="127.0.0.2").host_names()[-1] == "127.0.0.2"
    assert "0.0.0.0" not in FlowViewSettings(host="0.0.0.0", access_token=TOKEN).host_names()  # type: ignore[arg-type]
    listed = FlowViewSettings(allowed_hosts=" flowview , localhost ")
    assert listed.host_names() == ["flowview", "localhost"]


def test_refusals_say_why_and_carry_the_security_headers() -> None:
    app = create_app(DEAD_JAEGER, allowed_hosts=["flowview"], access_token=TOKEN)
    with TestClient(app, base_url="http://flowview:16687") as client:
        refused = client.get("/api/config", headers={"host": "evil.example"})
        assert refused.status_code == 421
        assert refused.json()["error"].startswith("this flow view does not answer to")
        unauthorised = client.get("/api/config")
        assert unauthorised.status_code == 401
        assert unauthorised.headers["www-authenticate"].startswith('Basic realm="')
        ok = client.get("/api/config", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        for response in (refused, unauthorised, ok):
            assert response.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
