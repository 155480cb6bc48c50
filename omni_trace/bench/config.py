"""What a bench run loads: the on/off bench's and the scale bench's settings, and their
small `--quick` presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    burst: int = 500  # connections of the burst, one message each
    # The burst's connections open within this time. 10 s is the load docs/performance.md's
    # tables were first measured at; at 5 s this 2-core machine is saturated (the report's
    # "busy" line shows it) and queueing multiplies any cost, tracing's included
    # (docs/performance.md).
    burst_spread_s: float = 10.0
    # The same burst again within this time (None: not run). The p99 targets allow 1.5 at
    # 5 s, where two cores are close to busy, and 1.25 at 10 s.
    tight_burst_spread_s: float | None = 5.0
    clients: int = 16  # steady load: clients ...
    messages: int = 50  # ... sending this many messages each
    steady_blocks: int = 5  # ... in this many blocks per stack, alternating between stacks
    as_up: bool = True  # also a stack as `omni-trace up` runs it (flow view, Prometheus)
    hop_messages: int = 200  # per path, for the per-message hop cost
    hop_connects: int = 50  # per path, for the handshake cost
    history_rows: int = 100_000  # long history: messages stored for one user beforehand ...
    history_messages: int = 300  # ... then this many sent by that user, fresh vs long history
    chains_checked: int = 20  # burst messages whose chain is checked in Jaeger
    token_delay_ms: float = 0.0  # the offline model's pause between tokens
    database_url: str | None = None  # OMNI2's database (default: SQLite in the run dir)
    rounds: int = 2  # rounds of the stacks side by side; steady ratios are the rounds' medians

    @property
    def burst_spreads(self) -> tuple[float, ...]:
        tight = self.tight_burst_spread_s
        return (self.burst_spread_s,) if tight is None else (self.burst_spread_s, tight)


QUICK = BenchConfig(
    rounds=1,
    burst=40,
    burst_spread_s=1.0,
    tight_burst_spread_s=None,
    clients=4,
    messages=10,
    steady_blocks=2,
    hop_messages=30,
    hop_connects=10,
    history_rows=2_000,
    # 20 turns a block: OMNI2 spends ~3-4 ms a turn and /proc counts CPU in 10 ms ticks,
    # so a block of 3 turns could read 0.
    history_messages=120,
    chains_checked=5,
)


@dataclass(frozen=True)
class ScaleConfig:
    burst: int = 500  # connections of the burst through the scale profile, one message each
    burst_spread_s: float = 10.0  # they open within this time (as the on/off bench's burst)
    clients: int = 16  # steady load, 1 vs 2 OMNI2 replicas: clients ...
    messages: int = 50  # ... sending this many messages each
    # Rounds of (a stack with 1 OMNI2, a stack with 2), in alternating order: one load lasts
    # seconds, and the other work on a shared machine moves it by tens of percent (and
    # PostgreSQL's commits with the disk); the ratio is the median of the rounds' ratios.
    rounds: int = 3
    samples: int = 100  # messages timed from done to queryable, per pipeline
    # One sample starts this often, whatever the others do. Sent one after the other, each
    # when the last was whole, they would fall in step with Traefik's 5 s export period and
    # all wait the whole period; 1.3 s is no divisor of it, so they fall at every phase.
    sample_every_s: float = 1.3
    poll_interval_s: float = 0.05  # how often Jaeger is asked while a sample waits
    sample_timeout_s: float = 30.0  # a sample not whole by then is counted as late
    # Every answered burst message's chain must be whole by then (after the burst): the
    # pipeline drains hundreds of traces, and Traefik exports its spans every 5 s.
    chains_timeout_s: float = 180.0
    token_delay_ms: float = 0.0  # the offline model's pause between tokens

    def load(self) -> BenchConfig:
        """What the on/off bench's load functions (burst, steady) read."""
        return BenchConfig(
            burst=self.burst,
            burst_spread_s=self.burst_spread_s,
            clients=self.clients,
            messages=self.messages,
            token_delay_ms=self.token_delay_ms,
        )


SCALE_QUICK = ScaleConfig(burst=40, burst_spread_s=2.0, clients=4, messages=10, rounds=1, samples=5)
