"""`omni-trace names`: the table of span names and attributes, or with --lint a Jaeger's
recent spans checked for deprecated or unknown GenAI/MCP attribute names."""

from __future__ import annotations

import argparse
from typing import Any

from omni_trace.commands.common import add_stack_file, jaeger_url
from omni_trace.errors import CliError
from omni_trace.traces.jaeger import JaegerClient, JaegerError
from otel.names import telemetry_markdown

LINT = "omni-trace names --lint"


def add_parser(sub: Any) -> None:
    names = sub.add_parser("names", help="print the table of span names and attributes")
    names.add_argument("--markdown", action="store_true", help="the table (the default; for docs)")
    names.add_argument(
        "--lint",
        action="store_true",
        help="check a Jaeger's recent spans for deprecated or unknown GenAI/MCP attribute names "
        "(exit 1 when found, 2 when Jaeger cannot be read)",
    )
    add_stack_file(names)
    names.add_argument(
        "--jaeger", metavar="URL", help="with --lint: Jaeger query URL (default: the stack's)"
    )
    _add_lint_options(names)
    names.set_defaults(func=run)


def _add_lint_options(names: argparse.ArgumentParser) -> None:
    names.add_argument(
        "--minutes", type=float, default=60.0, help="with --lint: how far back (default 60)"
    )
    names.add_argument(
        "--span-limit",
        type=int,
        default=20_000,
        help="with --lint: read at most this many spans (default 20000)",
    )
    names.add_argument(
        "--traces",
        type=int,
        default=200,
        help="with --lint: the newest traces read per service (default 200)",
    )
    names.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help="with --lint: only this service's spans (repeatable; default: every service)",
    )
    names.add_argument(
        "--timeout", type=float, default=10.0, help="with --lint: seconds per Jaeger request"
    )


def run(args: argparse.Namespace) -> int:
    if args.lint:
        return lint(args)
    print(telemetry_markdown(), end="")
    return 0


def lint(args: argparse.Namespace) -> int:
    """Exit 1 when a span carries a deprecated or unknown GenAI/MCP name, 0 when clean, 2 when
    Jaeger cannot be read."""
    import httpx

    from omni_trace.traces.names_lint import lint_jaeger

    if args.minutes <= 0 or args.span_limit < 1 or args.traces < 1:
        raise CliError("--minutes, --span-limit and --traces must be positive", prog=LINT)
    try:
        url = jaeger_url(args)
    except (OSError, ValueError) as err:
        raise CliError(f"no --jaeger URL and no running stack ({err})", prog=LINT) from err
    try:
        with JaegerClient(url, timeout=args.timeout) as client:
            result = lint_jaeger(
                client,
                minutes=args.minutes,
                span_limit=args.span_limit,
                traces_per_service=args.traces,
                services=args.service or (),
            )
    except (JaegerError, httpx.HTTPError, ValueError) as err:
        raise CliError(f"cannot read spans from Jaeger at {url}: {err}", prog=LINT) from err
    print(result.render(), end="")
    return 1 if result.findings else 0
