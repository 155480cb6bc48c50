"""What a chat frame means to the WebSocket instrumentors.

A chat protocol over a WebSocket is JSON frames with a kind: some open a message (the user's
question), some stream it (tokens), some end it (the answer, an error); trace context rides in
a field of the opening frame, and the server's frames may name the conversation and the
reply's trace id. `FrameCodec` says which is which; OMNI2's protocol is the default, and a
team with other frames writes its own in a few lines:

    FrameCodec(kind_key="op", opens={"ask"}, streams={"chunk"}, ends={"end", "fail"},
               fails={"fail"}, trace_path=("meta", "trace"))

Token frames are most of a stream, so a codec recognises them by their first bytes and
parses only the others. Those bytes come from the codec's own description of a stream frame
(`stream_prefixes`: its kind key first, then one of its stream kinds, with `json.dumps`'s
default or compact separators), never from a copy of a backend's output; a stream frame
written another way (its kind not first) is still recognised by `kind` after a parse, only
slower. tests/services/omni2/test_token_frames.py checks that what OMNI2 sends takes the
fast path, so a change to its JSON layout fails a test instead of quietly costing a parse
per token frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str, ...]


def _frozen(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


@dataclass(frozen=True)
class FrameCodec:
    kind_key: str = "type"
    # Sets of frame kinds (any set: kept as frozensets).
    opens: AbstractSet[str] = frozenset({"message"})
    streams: AbstractSet[str] = frozenset({"token"})
    ends: AbstractSet[str] = frozenset({"done", "error", "blocked"})
    fails: AbstractSet[str] = frozenset({"error", "blocked"})
    # Where things live in a frame: a path of keys from the frame's top.
    trace_path: Path = ("trace",)  # a {"traceparent": ...} object, in client frames
    conversation_path: Path = ("conversation_id",)  # in any server frame that names it
    user_path: Path = ("user_id",)
    reply_trace_path: Path = ("trace_id",)  # an ending frame's trace id (which message)
    error_code_path: Path = ("code",)
    error_text_path: Path = ("error",)
    _stream_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("opens", "streams", "ends", "fails"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if not self.fails <= self.ends:
            raise ValueError("every failing frame kind must also end a message")
        prefixes = tuple(
            f"{{{json.dumps(self.kind_key)}{sep}{json.dumps(kind)}"
            for kind in sorted(self.streams)
            for sep in (": ", ":")
        )
        object.__setattr__(self, "_stream_prefixes", prefixes)

    @property
    def stream_prefixes(self) -> tuple[str, ...]:
        """How a stream frame starts when its kind key comes first: `{"<kind_key>": "<kind>"`
        for each stream kind, with `json.dumps`'s default separator (`": "`) or the compact
        one (`":"`). The fast path of `is_stream_text`, and all of it."""
        return self._stream_prefixes

    def is_stream_text(self, text: str) -> bool:
        """A token frame, by its first bytes, without parsing it (a frame written another
        way is still recognised by `kind` after a parse)."""
        return text.startswith(self._stream_prefixes)

    def kind(self, frame: Mapping[str, Any]) -> str | None:
        value = frame.get(self.kind_key)
        return value if isinstance(value, str) else None

    def carrier(self, frame: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The trace context object of a client frame, if it has one."""
        value = get_path(frame, self.trace_path)
        return value if isinstance(value, Mapping) else None

    def with_carrier(self, frame: dict[str, Any], carrier: dict[str, str]) -> None:
        """Put `carrier` where this protocol's trace context lives (made if missing)."""
        set_path(frame, self.trace_path, carrier)

    def text(self, frame: Mapping[str, Any], path: Path) -> str | None:
        value = get_path(frame, path)
        return value if isinstance(value, str) else None


def get_path(frame: Mapping[str, Any], path: Path) -> Any:
    value: Any = frame
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def set_path(frame: dict[str, Any], path: Path, value: Any) -> None:
    """Set `value` at `path`; an intermediate that is not an object is replaced by one."""
    target = frame
    for key in path[:-1]:
        inner = target.get(key)
        if not isinstance(inner, dict):
            inner = target[key] = {}
        target = inner
    target[path[-1]] = value


OMNI2 = FrameCodec()
