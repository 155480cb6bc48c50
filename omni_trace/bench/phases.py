"""The phases of one stack's run: the burst, the steady load, the hops and the long
history; each returns its part of the report."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omni_trace.bench import load
from omni_trace.bench.load import TOOL_FREE, Phase, Sample
from omni_trace.bench.processes import cpu_spent, own_cpu_s, sample_stack
from omni_trace.bench.report import Burst, BurstSamples, History, HopRatios, Hops, Steady
from omni_trace.bench.stats import difference, ratio, seconds_as_ms
from omni_trace.traces.stats import percentile

SLOWEST = 3  # the slowest messages of a burst whose spans the report shows


@dataclass(frozen=True)
class Slow:
    """One of a burst's slowest messages, before its spans are read from Jaeger."""

    trace_id: str
    latency_ms: float
    ttft_ms: float


@dataclass(frozen=True)
class BurstRun:
    """A burst's report, and what the traced checks read after it."""

    report: Burst
    trace_ids: tuple[str, ...]  # of the answered messages
    slowest: tuple[Slow, ...]


def burst_phase(run: Phase, spread_s: float | None = None) -> BurstRun:
    cfg = run.cfg
    spread_s = cfg.burst_spread_s if spread_s is None else spread_s
    run.say(f"burst: {cfg.burst} connections within {spread_s:g} s ...")
    before, mine, started = sample_stack(run.stack), own_cpu_s(), time.perf_counter()
    samples, held = asyncio.run(load.burst(run, spread_s))
    after = sample_stack(run.stack)
    # A saturated machine queues work, and queueing multiplies any extra cost: say how busy
    # the cores were, counting this process too (it plays the clients), and what a
    # connection with its message cost them, so the rate they could serve.
    busy_s = sum(cpu_spent(before, after).values()) + own_cpu_s() - mine
    cores = os.cpu_count() or 1
    busy = busy_s / ((time.perf_counter() - started) * cores)
    per_connection_ms = busy_s * 1000 / max(cfg.burst, 1)
    ok = [s for s in samples if s.ok]
    per_connection = {
        name: (held[name] - before[name].rss_mb) * 1024 / cfg.burst
        for name in ("dashboard", "omni2")
        if name in held and name in before
    }
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    latency = [s.latency_s for s in ok if s.latency_s is not None]
    report = Burst(
        spread_s=spread_s,
        connections=cfg.burst,
        answered=len(ok),
        lost=len(samples) - len(ok),
        errors=tuple(sorted({s.error for s in samples if not s.ok})[:5]),
        ttft_ms=seconds_as_ms(ttft),
        latency_ms=seconds_as_ms(latency),
        # Every sample, so that rounds pool into one distribution (its tail is a handful of
        # messages per burst: a median of per-round p99s would hide it).
        samples_ms=BurstSamples(
            tuple(round(t * 1000, 3) for t in ttft), tuple(round(t * 1000, 3) for t in latency)
        ),
        cores_busy_pct=round(100 * busy, 1),
        cpu_ms_per_connection=round(per_connection_ms, 2),
        # Connections (with one message each) per second the cores could serve at that cost.
        capacity_per_s=round(cores * 1000 / per_connection_ms, 1) if per_connection_ms else None,
        peak_rss_mb={name: round(s.peak_rss_mb, 1) for name, s in after.items()},
        held_kb_per_connection={k: round(v, 1) for k, v in per_connection.items()},
    )
    return BurstRun(report, tuple(s.trace_id for s in ok), _slowest(ok))


def _slowest(answered: Sequence[Sample]) -> tuple[Slow, ...]:
    slowest = sorted(answered, key=lambda s: s.latency_s or 0.0, reverse=True)[:SLOWEST]
    return tuple(
        Slow(s.trace_id, (s.latency_s or 0.0) * 1000, (s.ttft_s or 0.0) * 1000) for s in slowest
    )


def steady_phase(run: Phase) -> Steady:
    """The steady load on one stack: C clients, each on its own connection, M messages."""
    run.say(f"steady: {run.cfg.clients} clients x {run.cfg.messages} messages ...")
    before = sample_stack(run.stack)
    samples, wall = asyncio.run(load.steady(run))
    return steady_report(samples, wall, cpu_spent(before, sample_stack(run.stack)))


def steady_report(
    samples: Sequence[Sample],
    wall: float,
    spent: Mapping[str, float],
    by_block: Sequence[float] = (),
) -> Steady:
    turns = sum(s.ok for s in samples)
    per_turn = {name: cpu * 1000 / max(turns, 1) for name, cpu in spent.items()}
    return Steady(
        turns=turns,
        lost=len(samples) - turns,
        seconds=round(wall, 3),
        turns_per_s=turns / wall if wall > 0 else None,
        cpu_ms_per_turn=sum(per_turn.values()),
        cpu_ms_per_turn_by_process={k: round(v, 3) for k, v in sorted(per_turn.items())},
        latency_ms=seconds_as_ms([s.latency_s for s in samples if s.latency_s is not None]),
        cpu_ms_per_turn_by_block=tuple(by_block) if by_block else None,
    )


def interleaved_steady_phase(runs: Mapping[str, Phase], order: Sequence[str]) -> dict[str, Steady]:
    """The steady load on several stacks, in blocks that alternate between them (see
    `load.interleaved_steady`)."""
    tallies = asyncio.run(load.interleaved_steady(runs, order))
    return {
        name: steady_report(t.samples, t.wall, t.spent, t.by_block) for name, t in tallies.items()
    }


def hops_phase(run: Phase) -> Hops:
    """p50 message round trip and handshake through each entry: dashboard, Traefik, OMNI2."""
    cfg = run.cfg
    run.say(f"hops: {cfg.hop_messages} messages and {cfg.hop_connects} handshakes per path")
    connects, round_trips = asyncio.run(load.hop_samples(run))
    message_ms = {name: percentile([t * 1000 for t in v], 50) for name, v in round_trips.items()}
    handshake_ms = {name: percentile([t * 1000 for t in v], 50) for name, v in connects.items()}

    def hops(values: dict[str, float | None]) -> dict[str, float | None]:
        return {
            "dashboard": difference(values["dashboard"], values["traefik"]),
            "traefik": difference(values["traefik"], values["omni2"]),
        }

    message_hops, handshake_hops = hops(message_ms), hops(handshake_ms)
    return Hops(
        message_round_trip_ms=message_ms,
        handshake_ms=handshake_ms,
        message_hop_ms=message_hops,
        handshake_hop_ms=handshake_hops,
        dashboard_over_traefik=HopRatios(
            message=ratio(message_hops["dashboard"], message_hops["traefik"]),
            handshake=ratio(handshake_hops["dashboard"], handshake_hops["traefik"]),
        ),
    )


def history_phase(run: Phase) -> History:
    """Does a turn cost more once the user has a long history? One user gets `history_rows`
    stored messages; then that user and a user without history send messages in alternating
    blocks, so both are measured over the same stretch of the machine's noise. OMNI2's CPU per
    turn of each (and, first, of the fresh database)."""
    cfg = run.cfg
    blocks = 6
    per_block = max(cfg.history_messages // blocks, 1)
    run.say(
        f"long history: {cfg.history_rows:,} messages stored for one user, then "
        f"{blocks} blocks of {per_block} messages, alternating with a user without history ..."
    )
    # The last two bench users: no other phase sends as them.
    fresh_user, long_user = len(run.users.ids) - 2, len(run.users.ids) - 1

    def omni2_cpu(user: int) -> tuple[float, int]:
        before = sample_stack(run.stack)
        turns = sum(s.ok for s in asyncio.run(run.chat(user, [TOOL_FREE] * per_block)))
        return cpu_spent(before, sample_stack(run.stack)).get("omni2", 0.0), turns

    first, first_turns = omni2_cpu(long_user)  # before its history is stored
    run.users.store_history(run.users.ids[long_user], cfg.history_rows)
    cpu = {fresh_user: 0.0, long_user: 0.0}
    turns = {fresh_user: 0, long_user: 0}
    for block in range(blocks):
        user = (fresh_user, long_user)[block % 2]
        spent, answered = omni2_cpu(user)
        cpu[user] += spent
        turns[user] += answered

    def ms(user: int) -> float | None:
        return cpu[user] * 1000 / turns[user] if turns[user] else None

    fresh, long = ms(fresh_user), ms(long_user)
    return History(
        stored_messages=cfg.history_rows,
        omni2_cpu_ms_per_turn_fresh_database=first * 1000 / first_turns if first_turns else None,
        omni2_cpu_ms_per_turn_fresh=fresh,
        omni2_cpu_ms_per_turn_long_history=long,
        long_over_fresh=ratio(long, fresh),
    )
