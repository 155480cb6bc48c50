"""The bench's load: its users, a message and its sample, the burst, the steady load in
blocks that alternate between stacks, and the hops' round trips and handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.trace import TracerProvider as ApiTracerProvider

from omni_trace.bench.config import BenchConfig
from omni_trace.bench.processes import cpu_spent, sample_stack
from omni_trace.stack.client import ChatConnection, ChatError, open_chat
from omni_trace.stack.environment import allowed_environment, inherited
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.stack.runner import Stack, StackError
from omni_trace.stack.users import ADMIN
from services.common.provenance import DASHBOARD_KEY_HEADER

Progress = Callable[[str], None]

MESSAGE_TIMEOUT_S = 60.0  # a message without an answer by then counts as lost
TOOL_FREE = "Hello, what can you do?"
TOOL_CALLING = "How many products per category are in the database?"
HOP_PATHS = ("dashboard", "traefik", "omni2")  # the entries of the hop phase, outer first


@dataclass
class Sample:
    ok: bool
    ttft_s: float | None = None
    latency_s: float | None = None
    trace_id: str = ""
    error: str = ""
    done_at: float = 0.0  # perf_counter() when the answer (or the failure) arrived


class BenchUsers:
    """Users of a role without limits, so the bench measures the pipeline, not refusals;
    each connection of the burst gets its own (OMNI2 allows a few connections per user).
    Made by OMNI2's own admin command, which also gives each a token."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ids: list[str] = []
        self.tokens: list[str] = []

    def _admin(self, *args: str) -> str:
        env = {
            **inherited(allowed_environment("omni2")),  # OMNI2's own, as the runner gives it
            "OMNI2_DATABASE_URL": self.stack.info.omni2_database_url,
            "OMNI_JWT_SECRET": self.stack.jwt_secret,
        }
        run = subprocess.run(
            [*ADMIN, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            raise StackError(f"OMNI2's admin command {args[0]} failed: {run.stderr.strip()}")
        return run.stdout

    def create(self, count: int) -> None:
        users = json.loads(self._admin("load-users", str(count)))["users"]
        self.ids += [u["id"] for u in users]
        self.tokens += [u["token"] for u in users]

    def store_history(self, user_id: str, rows: int) -> None:
        """`rows` earlier messages of the user (with their usage), in a past conversation."""
        self._admin("store-history", user_id, str(rows))

    def token(self, index: int) -> tuple[str, str]:
        return self.ids[index % len(self.ids)], self.tokens[index % len(self.tokens)]


async def message(chat: ChatConnection, text: str) -> Sample:
    """One message on an open connection, timed (a failure is a sample too)."""
    try:
        reply = await asyncio.wait_for(chat.send(text), MESSAGE_TIMEOUT_S)
    except TimeoutError:
        return Sample(False, error=f"no answer within {MESSAGE_TIMEOUT_S:g} s")
    except (ChatError, OSError) as err:
        return Sample(False, error=str(err))
    return Sample(
        reply.ok,
        reply.time_to_first_token_s,
        reply.duration_s,
        str(reply.frame.get("trace_id") or reply.trace_id),
        "" if reply.ok else str(reply.frame.get("error", "")),
        time.perf_counter(),
    )


@dataclass
class Phase:
    """What every phase of one stack's run works with."""

    stack: Stack
    users: BenchUsers
    provider: ApiTracerProvider
    cfg: BenchConfig
    label: str
    progress: Progress

    def say(self, text: str) -> None:
        self.progress(f"[{self.label}] {text}")

    async def chat(self, user: int, texts: Sequence[str]) -> list[Sample]:
        """Bench user number `user` sends `texts` one after the other on one connection."""
        _, token = self.users.token(user)
        async with open_chat(
            self.stack.info.dashboard_ws_url, token, tracer_provider=self.provider
        ) as chat:
            return [await message(chat, text) for text in texts]


async def burst(run: Phase, spread_s: float) -> tuple[list[Sample], dict[str, float]]:
    """K connections opened within `spread_s`, each sends one message once connected; all are
    held until every one is answered. Returns the samples and the RSS (MB) of each process
    with every connection held."""
    stack, cfg = run.stack, run.cfg
    all_answered = asyncio.Event()
    remaining = cfg.burst
    held: dict[str, float] = {}

    async def one(index: int) -> Sample:
        nonlocal remaining
        await asyncio.sleep(spread_s * index / max(cfg.burst, 1))
        _, token = run.users.token(index)
        try:
            async with open_chat(
                stack.info.dashboard_ws_url, token, tracer_provider=run.provider, open_timeout=30
            ) as chat:
                sample = await message(chat, TOOL_FREE)
                remaining -= 1
                if remaining == 0:
                    held.update({n: s.rss_mb for n, s in sample_stack(stack).items()})
                    all_answered.set()
                await all_answered.wait()
                return sample
        except (ChatError, OSError) as err:
            remaining -= 1
            if remaining == 0:
                all_answered.set()
            return Sample(False, error=str(err))

    samples = await asyncio.gather(*(one(i) for i in range(cfg.burst)))
    return list(samples), held


async def steady(run: Phase) -> tuple[list[Sample], float]:
    """C clients, M messages each, back to back. Returns the samples and the wall time."""
    texts = [TOOL_FREE] * run.cfg.messages
    started = time.perf_counter()
    results = await asyncio.gather(*(run.chat(i, texts) for i in range(run.cfg.clients)))
    return [s for r in results for s in r], time.perf_counter() - started


# The services send their spans every 200 ms: a block's measure waits that long (and for
# Jaeger to store them) before it reads the CPU, so each block pays for its own export.
BLOCK_SETTLE_S = 0.4


async def _block(chats: Sequence[ChatConnection], messages: int) -> list[Sample]:
    async def one(chat: ChatConnection) -> list[Sample]:
        return [await message(chat, TOOL_FREE) for _ in range(messages)]

    results = await asyncio.gather(*(one(chat) for chat in chats))
    return [sample for result in results for sample in result]


@dataclass
class BlockTally:
    """One stack's share of the interleaved steady load, block by block."""

    samples: list[Sample] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)  # CPU seconds by process
    wall: float = 0.0
    by_block: list[float] = field(default_factory=list)  # CPU ms per turn of each block

    async def block(self, run: Phase, chats: Sequence[ChatConnection], messages: int) -> None:
        """`messages` on each connection of the stack, its CPU read once the spans are out."""
        before = sample_stack(run.stack)
        started = time.perf_counter()
        got = await _block(chats, messages)
        self.wall += time.perf_counter() - started
        await asyncio.sleep(BLOCK_SETTLE_S)
        cpu = cpu_spent(before, sample_stack(run.stack))
        for process, seconds in cpu.items():
            self.spent[process] = self.spent.get(process, 0.0) + seconds
        self.samples += got
        turns = max(sum(s.ok for s in got), 1)
        self.by_block.append(round(sum(cpu.values()) * 1000 / turns, 3))


async def interleaved_steady(
    runs: Mapping[str, Phase], order: Sequence[str]
) -> dict[str, BlockTally]:
    """The steady load on several stacks, in blocks that alternate between them.

    Each stack's C clients stay connected throughout; a block sends M / blocks messages on
    each connection of one stack while the others wait, and the order of the stacks turns
    around every block. So a stretch of a shared machine's noise falls on every stack alike,
    and the ratios compare blocks seconds apart, not runs minutes apart. Turns per second
    and CPU per turn of each stack come from its own blocks only."""
    cfg = runs[order[0]].cfg
    blocks = max(min(cfg.steady_blocks, cfg.messages), 1)
    tallies = {name: BlockTally() for name in order}
    async with contextlib.AsyncExitStack() as held:
        chats = {
            name: [
                await held.enter_async_context(
                    open_chat(
                        runs[name].stack.info.dashboard_ws_url,
                        runs[name].users.token(client)[1],
                        tracer_provider=runs[name].provider,
                    )
                )
                for client in range(cfg.clients)
            ]
            for name in order
        }
        for block in range(blocks):
            # M messages in all: the first M % blocks blocks send one more.
            per_block = cfg.messages // blocks + (block < cfg.messages % blocks)
            for name in order if block % 2 == 0 else order[::-1]:
                await tallies[name].block(runs[name], chats[name], per_block)
    return tallies


Entry = tuple[str, str | None, dict[str, str] | None]  # URL, token in the query, headers


def hop_entries(run: Phase) -> dict[str, Entry]:
    """The dashboard (the token in the query), Traefik (what the dashboard sends it: the
    bearer token, and its key lets it in) and OMNI2 (what Traefik then sends it)."""
    stack = run.stack
    user, token = run.users.token(0)
    bearer = {"Authorization": f"Bearer {token}", DASHBOARD_KEY_HEADER: stack.dashboard_key}
    return {
        "dashboard": (stack.info.dashboard_ws_url, token, None),
        "traefik": (stack.info.traefik_ws_url, None, bearer),
        "omni2": (stack.info.omni2_ws_url, None, bearer | {"x-user-id": user}),
    }


async def hop_samples(run: Phase) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Handshakes, then message round trips (seconds) through each entry. Interleaved, path
    after path for every sample, so a noisy moment of a shared machine falls on all three
    paths alike."""
    provider, cfg, paths = run.provider, run.cfg, hop_entries(run)
    connects: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(cfg.hop_connects):
        for name, (url, query_token, headers) in paths.items():
            started = time.perf_counter()
            async with open_chat(url, query_token, tracer_provider=provider, headers=headers):
                connects[name].append(time.perf_counter() - started)
    round_trips: dict[str, list[float]] = {name: [] for name in paths}
    async with contextlib.AsyncExitStack() as stack_:
        chats = {
            name: await stack_.enter_async_context(
                open_chat(url, query_token, tracer_provider=provider, headers=headers)
            )
            for name, (url, query_token, headers) in paths.items()
        }
        for _ in range(cfg.hop_messages):
            for name, chat in chats.items():
                sample = await message(chat, TOOL_FREE)
                if sample.latency_s is not None:
                    round_trips[name].append(sample.latency_s)
    return connects, round_trips
