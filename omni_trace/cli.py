"""`omni-trace`: run the traced OMNI2 chat stack, chat through it, and see each message's trace.

The commands are in omni_trace/commands/ (one module each); this is the parser they share and
`main`, which turns a clear failure (`CliError`, or pydantic's ValidationError of an option or
an OMNI_TRACE_* variable) into its message and exit 2."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from omni_trace.commands import COMMANDS
from omni_trace.commands.common import raise_stop
from omni_trace.commands.doctor import token as _doctor_token
from omni_trace.errors import CliError

# _doctor_token: for tests/whole_stack/test_doctor.py
__all__ = ["_doctor_token", "build_parser", "main"]

DESCRIPTION = (
    "Run the OMNI2 WebSocket chat stack (browser/client, dashboard backend, Traefik "
    "with JWT ForwardAuth, OMNI2) fully traced with OpenTelemetry, so that every chat "
    "message is one trace in Jaeger across every layer."
)
EPILOG = """\
environment:
  OMNI_TRACE_MODEL_TOKEN_DELAY_MS   offline model pause per token (default 15)
  JAEGER_BIN                        use this Jaeger v2 binary instead of building one
  OMNI_TRACE_JAEGER_QUERY_URL       use a running Jaeger (query API base URL) ...
  OMNI_TRACE_JAEGER_OTLP_ENDPOINT   ... and its OTLP/HTTP base URL
  OMNI_TRACE_PUBLIC_TRACE_SERVICES  client services the public OTLP path (4319) takes
                                    (default chat-client,chat-browser)
  OTEL_*                            standard OpenTelemetry variables, honoured by every service

quick start:
  omni-trace demo            start everything, chat, show the traces (Ctrl-C stops)
  omni-trace up              start the stack and keep it running; open the printed chat page
  omni-trace chat "hello"    chat through a running stack and print the trace id
  omni-trace trace show last a waterfall of the newest message trace
  omni-trace audit --since 15m   is every message's chain whole? (exit 1 if not)
  omni-trace doctor          where does the chain break?
  omni-trace users list      OMNI2's users, roles, limits (also add, passwd, block, limits)
  omni-trace bench --quick   what tracing costs: the same load with tracing on and off
  omni-trace bench --scale   the scale-out profile: 500 chats, nothing lost, 1 vs 2 OMNI2
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-trace",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _fail(*messages: str) -> int:
    for message in messages:
        print(message, file=sys.stderr)
    return 2


def _settings_problems(err: ValidationError) -> list[str]:
    """One line per option or OMNI_TRACE_* variable out of range, as `where: why`."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"omni-trace: {f'{where}: ' if where else ''}{message}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, raise_stop)
    try:
        return int(args.func(args))
    except CliError as err:
        return _fail(f"{err.prog}: {err}")
    except ValidationError as err:  # pydantic's, so not a CliError: settings out of range
        return _fail(*_settings_problems(err))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
