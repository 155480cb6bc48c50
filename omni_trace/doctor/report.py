"""What the probe found: one check per layer, and where the chain breaks (if it does).

Plain data and text: it imports nothing of the stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[str], None]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)
    hop: str | None = None  # where the chain breaks, e.g. "dashboard -> traefik"
    verdict: str = ""
    trace_ids: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.hop is None

    def render(self) -> str:
        lines = [f"  [{'ok' if c.ok else 'FAIL':>4}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("")
        lines.append(
            ("chain is whole: " if self.healthy else f"chain breaks at {self.hop}: ") + self.verdict
        )
        lines += [f"  trace {t}" for t in self.trace_ids]
        return "\n".join(lines)
