"""The CLI's shape: one module per command in omni_trace/commands, each with `add_parser` and
`run`, and one error base (`CliError`) that `main` turns into its message and exit 2."""

from __future__ import annotations

import argparse
import pkgutil
from pathlib import Path

import pytest

from omni_trace import commands
from omni_trace.cli import build_parser, main
from omni_trace.commands import COMMANDS, token
from omni_trace.errors import CliError
from omni_trace.stack.client import ChatError
from omni_trace.stack.errors import StackError
from omni_trace.stack.jaeger_build import JaegerBuildError
from omni_trace.stack.kafka import KafkaBuildError
from omni_trace.stack.postgres import PostgresUnavailable
from omni_trace.traces.baseline import BaselineError
from omni_trace.traces.jaeger import JaegerError
from omni_trace.traces.spec import SpecError

HELPERS = {"common"}  # shared by the commands, not one


def test_every_command_module_is_registered_with_add_parser_and_run() -> None:
    found = {m.name for m in pkgutil.iter_modules(commands.__path__)} - HELPERS
    assert found == {m.__name__.rsplit(".", 1)[1] for m in COMMANDS}
    for module in COMMANDS:
        assert callable(module.add_parser), module.__name__
        assert callable(module.run), module.__name__


@pytest.mark.parametrize(
    "argv",
    [
        ["up"],
        ["demo"],
        ["chat", "hi"],
        ["token"],
        ["audit"],
        ["trace", "show", "last"],
        ["trace", "diff", "a", "b"],
        ["doctor"],
        ["bench"],
        ["names"],
        ["dashboards"],
        ["users", "list"],
        ["build-jaeger"],
        ["build-kafka"],
    ],
)
def test_each_command_runs_its_modules_run(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    module = next(m for m in COMMANDS if args.func is m.run)
    assert module.__name__.startswith("omni_trace.commands.")


@pytest.mark.parametrize(
    "error",
    [
        StackError,
        ChatError,
        JaegerError,
        JaegerBuildError,
        KafkaBuildError,
        PostgresUnavailable,
        SpecError,
        BaselineError,
    ],
)
def test_the_clear_failures_share_one_base(error: type[Exception]) -> None:
    assert issubclass(error, CliError)


def test_main_prints_a_cli_error_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise CliError("the stack file names no dashboard", prog="omni-trace token")

    monkeypatch.setattr(token, "run", fails)
    assert main(["token"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "omni-trace token: the stack file names no dashboard\n"
    assert captured.out == ""


def test_a_derived_error_from_below_the_cli_exits_2_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A spec that is not there: the toolkit's SpecError, before any Jaeger is asked.
    missing = tmp_path / "nowhere.yaml"
    code = main(["audit", "--jaeger", "http://127.0.0.1:9", "--spec", str(missing)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("omni-trace: ") and str(missing) in err
