"""The flow view and the chat page against a hostile web: DNS rebinding, a flow view bound
beyond loopback, a flood of audits, framing and injected scripts (README.md, "Security")."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from opentelemetry import trace

from omni_trace.flowview.data import FlowData, Page, VerdictCache
from omni_trace.flowview.metrics import AuditMetrics
from omni_trace.stack import Stack
from omni_trace.stack.ports import Ports
from omni_trace.traces import JaegerClient
from otel.names import Attr, Service, SpanName
from tests.whole_stack.conftest import client_provider, running_stack, serving

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TOKEN = "flow-view-token-" + "x" * 24
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _outside_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent over UDP
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def _env(stack: Stack, host: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWVIEW_")}
    return env | {
        "FLOWVIEW_HOST": host,
        "FLOWVIEW_PORT": str(port),
        "FLOWVIEW_JAEGER_QUERY_URL": stack.info.jaeger_query_url,
        **extra,
    }


@contextlib.contextmanager
def flow_view(stack: Stack, tmp_path: Path, host: str, **extra: str) -> Iterator[str]:
    """A flow view process of this test's own, over the stack's Jaeger."""
    port = Ports.free().flowview
    reach = "127.0.0.1" if host == "0.0.0.0" else host
    argv = [sys.executable, "-m", "omni_trace.flowview"]
    env = _env(stack, host, port, **extra)
    with serving(argv, env, f"http://{reach}:{port}", tmp_path / "flowview.log") as url:
        yield url


def test_a_foreign_host_is_refused_with_421(stack: Stack) -> None:
    url = stack.info.flowview_url
    port = _port(url)
    with httpx.Client(base_url=url, timeout=30) as client:
        for host in (
            "attacker.example",
            # DNS rebinding: the attacker's name, resolved to 127.0.0.1, on the right port.
            f"attacker.example:{port}",
            f"127.0.0.1.attacker.example:{port}",
            f"localhost.attacker.example:{port}",
        ):
            refused = client.get("/api/conversations", headers={"host": host})
            assert refused.status_code == 421, (host, refused.text)
            assert "does not answer to the host name" in refused.json()["error"]
            assert client.get("/", headers={"host": host}).status_code == 421
            assert client.get("/metrics", headers={"host": host}).status_code == 421
        # The names this machine reaches it by, whatever the port, and probes' /healthz.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", "[::1]:1"):
            answered = client.get("/api/config", headers={"host": host})
            assert answered.status_code == 200, (host, answered.text)
        assert client.get("/healthz", headers={"host": "attacker.example"}).status_code == 200


def test_a_flow_view_off_loopback_refuses_to_start_without_a_token(
    stack: Stack, tmp_path: Path
) -> None:
    for host in ("0.0.0.0", _outside_address() or "0.0.0.0"):
        port = Ports.free().flowview
        env = _env(stack, host, port)
        started = subprocess.run(
            [sys.executable, "-m", "omni_trace.flowview"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert started.returncode == 2, started.stderr
        assert "FLOWVIEW_ACCESS_TOKEN is required" in started.stderr
        assert f"FLOWVIEW_HOST ({host}) is not a loopback address" in started.stderr
        # A token too short to be one is refused, and not printed.
        short = subprocess.run(
            [sys.executable, "-m", "omni_trace.flowview"],
            env=env | {"FLOWVIEW_ACCESS_TOKEN": "hunter2"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert short.returncode == 2 and "at least 16 bytes" in short.stderr
        assert "hunter2" not in short.stderr


def test_off_loopback_only_the_token_opens_the_flow_view(stack: Stack, tmp_path: Path) -> None:
    host = _outside_address() or "0.0.0.0"
    with (
        flow_view(stack, tmp_path, host, FLOWVIEW_ACCESS_TOKEN=TOKEN) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        for path in ("/", "/api/conversations", "/api/config", "/metrics"):
            refused = client.get(path)
            assert refused.status_code == 401, (path, refused.text)
            assert refused.headers["www-authenticate"].startswith("Basic ")
            assert "access token" in refused.json()["error"]
        for wrong in (
            {"authorization": "Bearer " + TOKEN[:-1]},
            {"authorization": "Bearer " + TOKEN + "x"},
            {"authorization": "Basic " + base64.b64encode(b"me:nope").decode()},
            {"authorization": "Basic !!!"},
            {"authorization": TOKEN},
        ):
            assert client.get("/api/config", headers=wrong).status_code == 401, wrong
        assert client.get("/api/config", headers={"authorization": f"Bearer {TOKEN}"}).is_success
        # A browser's login box: any user name, the token as password.
        page = client.get("/api/conversations", auth=("anyone", TOKEN))
        assert page.status_code == 200, page.text
        assert client.get("/healthz").status_code == 200  # probes carry no token


def _seed_old_messages(stack: Stack, count: int) -> None:
    """`count` client message traces of two days ago (the public path's kind): work for an
    audit over the last week, out of the windows the other tests read."""
    start = time.time_ns() - 2 * 24 * 3600 * 10**9
    with client_provider(stack) as provider:
        tracer = provider.get_tracer("flood-seed")
        for i in range(count):
            at = start + i * 10**6
            # Padding: traces of a real message's size, so that answering a search costs Jaeger.
            attributes = {Attr.CONVERSATION_ID: f"seed-{i % 50}", "seed.padding": "p" * 400}
            root = tracer.start_span(
                SpanName.MESSAGE, start_time=at, attributes=attributes, kind=trace.SpanKind.CLIENT
            )
            with trace.use_span(root):
                for j in range(4):
                    tracer.start_span(f"step {j}", start_time=at + j).end(end_time=at + 10**5)
            root.end(end_time=at + 2 * 10**5)
            if i % 200 == 199:  # within the exporter's queue (2048 spans)
                provider.force_flush()
        provider.force_flush()


def _read_latencies(jaeger: JaegerClient, trace_id: str, stop: threading.Event) -> list[float]:
    """What the chat stack's own readers do (a trace by id, a tag search), timed."""
    seconds = []
    while not stop.is_set():
        started = time.perf_counter()
        assert jaeger.get_trace(trace_id)
        found = _three_days(jaeger, {Attr.CONVERSATION_ID: "seed-7"})
        assert found
        seconds.append(time.perf_counter() - started)
        time.sleep(0.05)
    return seconds


def _three_days(
    jaeger: JaegerClient, tags: dict[str, str] | None = None, limit: int = 5
) -> list[str]:
    """The seeded client traces (two days old) with `tags`."""
    end = time.time_ns() // 1000
    start = end - 3 * 24 * 3600 * 10**6
    return jaeger.find_trace_ids(Service.CHAT_CLIENT, tags, limit=limit, start_us=start, end_us=end)


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> int:
    count = 1500
    _seed_old_messages(stack, count)
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for _ in range(100):
            found = _three_days(jaeger, limit=count)
            if len(found) >= count:
                break
            time.sleep(0.2)
    return count


def test_a_settled_message_is_analysed_once_for_pages_and_scrapes(
    stack: Stack, seeded: int
) -> None:
    fetched: list[str] = []
    jaeger = JaegerClient(stack.info.jaeger_query_url, timeout=30)
    jaeger._http.event_hooks["request"].append(
        lambda request: (
            fetched.append(request.url.path)
            if request.url.path.startswith("/api/v3/traces/")
            else None
        )
    )
    data = FlowData(jaeger, VerdictCache(10_000))
    week = 7 * 24 * 3600.0
    with jaeger:
        first = data.conversations(since_s=week, page=Page(0, 200))
        analysed = len(fetched)
        fetched.clear()
        again = data.conversations(since_s=week - 1, page=Page(0, 200))
        refetched = len(fetched)
        fetched.clear()
        # The Prometheus scrape reads the same verdicts.
        AuditMetrics(data.auditor).counts()
        scraped = len(fetched)
        uncached = FlowData(jaeger).conversations(since_s=week, page=Page(0, 200))
    print(f"trace reads: {analysed} first, {refetched} again, {scraped} by the scrape")
    # The first audit read every message (the search's limit: 500 per layer); after it only
    # messages too recent to be settled (other tests' last seconds) are read again.
    assert analysed >= 500 and len(data.auditor.cache) >= 500
    assert refetched <= 20 and scraped <= 20
    assert again == first == uncached


def test_a_flood_of_audits_is_refused_and_jaeger_keeps_answering(stack: Stack, seeded: int) -> None:
    url = stack.info.flowview_url
    week = {"since": str(7 * 24 * 3600), "page_size": "200"}
    with JaegerClient(stack.info.jaeger_query_url, timeout=30) as jaeger:
        (probe,) = _three_days(jaeger, {Attr.CONVERSATION_ID: "seed-7"}, limit=1)
        baseline = statistics.median(_read_latencies(jaeger, probe, _stop_after(1.0)) or [0.0])
        stop = threading.Event()
        answers: list[httpx.Response] = []

        def flood(i: int) -> None:
            # Twenty readers at once, each asking for a week of every message again and
            # again (a new window each time, so no answer is one cached for another).
            with httpx.Client(base_url=url, timeout=120) as client:
                while not stop.is_set():
                    params = week | {"since": str(7 * 24 * 3600 - i - len(answers))}
                    answers.append(client.get("/api/conversations", params=params))
                    time.sleep(0.2 if answers[-1].status_code == 503 else 0)

        with ThreadPoolExecutor(21) as pool:
            flooding = [pool.submit(flood, i) for i in range(20)]
            time.sleep(1.0)
            reads = pool.submit(_read_latencies, jaeger, probe, stop)
            time.sleep(10.0)
            stop.set()
            during = reads.result()
            for f in flooding:
                f.result()
    busy = [a for a in answers if a.status_code == 503]
    served = [a for a in answers if a.status_code == 200]
    print(
        f"Jaeger reads: median {baseline * 1000:.0f} ms alone, during the flood median "
        f"{statistics.median(during) * 1000:.0f} ms, max {max(during) * 1000:.0f} ms "
        f"({len(during)} reads); flood: {len(served)} answered, {len(busy)} refused (503)"
    )
    assert busy and served
    assert {a.status_code for a in answers} == {200, 503}
    assert all(a.headers.get("retry-after") == "2" for a in busy)
    assert "retry in 2 s" in busy[0].json()["error"]
    assert statistics.median(during) < 0.25 and max(during) < 3.0


def _stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def test_the_pages_forbid_framing_and_foreign_scripts(stack: Stack) -> None:
    chat = httpx.get(f"{stack.info.frontend_url}/", timeout=10)
    test_page = httpx.get(f"{stack.info.frontend_url}/test_ws_chat.html", timeout=10)
    flow = httpx.get(f"{stack.info.flowview_url}/", timeout=10)
    refused = httpx.get(f"{stack.info.flowview_url}/", headers={"host": "evil.example"})
    for response in (chat, test_page, flow, refused):
        assert HEADERS.items() <= response.headers.items(), response.headers
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert (chat.status_code, flow.status_code, refused.status_code) == (200, 200, 421)
    # The chat page connects where /config.json sends it, and nowhere else.
    connect = next(
        d for d in chat.headers["content-security-policy"].split("; ") if "connect-src" in d
    )
    origins = {
        f"{u.scheme}://{u.netloc}"
        for u in map(
            urlsplit,
            (stack.info.dashboard_url, stack.info.dashboard_ws_url, stack.info.otlp_http_endpoint),
        )
    }
    assert set(connect.split()[1:]) == {"'self'", *origins}
    assert connect == chat.headers["content-security-policy"].split("; ")[4]
    flow_csp = flow.headers["content-security-policy"]
    assert "connect-src 'self';" in flow_csp


def test_omni_trace_up_off_loopback_gives_the_flow_view_a_token(
    tmp_path: Path, jwt_secret: str
) -> None:
    host = _outside_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    with running_stack(tmp_path / "run", jwt_secret, host=host) as stack:
        url = stack.info.flowview_url
        token = (stack.config_dir / "flowview-token").read_text()
        assert (stack.config_dir / "flowview-token").stat().st_mode & 0o077 == 0
        assert httpx.get(f"{url}/api/config", timeout=10).status_code == 401
        opened = httpx.get(f"{url}/api/config", auth=("me", token), timeout=10)
        assert opened.status_code == 200, opened.text
        # Prometheus scrapes the audit's /metrics with the token from that file.
        assert stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
        deadline = time.monotonic() + 40
        while True:
            targets = httpx.get(f"{stack.info.prometheus_url}/api/v1/targets", timeout=10)
            health = {
                t["labels"]["job"]: t["health"] for t in targets.json()["data"]["activeTargets"]
            }
            if health.get("flowview") == "up" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert health.get("flowview") == "up", targets.json()
