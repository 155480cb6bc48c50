"""The flow view's API answers through its models (omni_trace/flowview/models.py): a trace's,
a diff's and a search's answer over a served fake Jaeger is exactly what the view assembled, no
key added, none lost, and the hops the page heads its columns with are the spec's. (The
conversations' answers pass through theirs on the real stack:
tests/whole_stack/test_flowview_api.py.)"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from omni_trace.flowview.api import create_app
from omni_trace.flowview.data import FlowData
from omni_trace.flowview.models import Message, Trace, spec_info
from omni_trace.traces.jaeger import JaegerClient
from omni_trace.traces.spec import default_spec
from tests.omni_trace.flowview.test_jaeger_http import JaegerServer, served
from tests.omni_trace.flowview.test_ledger import message

__all__ = ["served"]  # the fixture, used by name

LOCAL = "http://127.0.0.1"


def _get(api: TestClient, path: str, **params: str) -> Any:
    answer = api.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_answer_is_what_the_view_assembled(served: JaegerServer) -> None:
    now = time.time()
    a = served.fake.add(message(0, now - 30))
    b = served.fake.add(message(1, now - 20, broken=True))
    with JaegerClient(served.url) as jaeger:
        data = FlowData(jaeger)
        expected = {
            "trace": data.trace(a),
            "diff": data.diff(a, b),
            "search": data.search(a),
        }
    with TestClient(create_app(served.url), base_url=LOCAL) as api:
        answers = {
            "trace": _get(api, f"/api/traces/{a}"),
            "diff": _get(api, "/api/diff", a=a, b=b),
            "search": _get(api, "/api/search", q=a),
        }
        config = _get(api, "/api/config")
    assert answers == expected
    assert answers["trace"]["kind"] == "message" and answers["trace"]["critical_path"]["span_ids"]
    assert answers["diff"]["layers_only_in_a"] and answers["search"]["view"] == "trace"
    assert config["spec"]["hops"] == spec_info(default_spec()).model_dump()["hops"]


def test_a_key_the_model_does_not_know_fails_loudly(served: JaegerServer) -> None:
    trace_id = served.fake.add(message(0, time.time() - 30))
    with JaegerClient(served.url) as jaeger:
        found = FlowData(jaeger).trace(trace_id)
    Trace.model_validate(found)
    with pytest.raises(ValidationError):
        Trace.model_validate(found | {"surprise": 1})
    with pytest.raises(ValidationError):
        Message.model_validate({k: v for k, v in found["chain"].items() if k != "hops_ms"})


def test_the_page_s_hop_columns_are_the_spec_s_hops_in_order() -> None:
    spec = default_spec()
    columns = spec_info(spec).hops
    assert tuple(c.key for c in columns) == spec.hops
    assert [c.label for c in columns if c.group == "first token at"] == [
        layer.name for layer in spec.message_layers
    ]
