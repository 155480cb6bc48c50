"""`omni-trace build-jaeger` and `build-kafka`: build (or find) the cached Jaeger binary and
Kafka broker, and print where they are."""

from __future__ import annotations

import argparse
from typing import Any

from omni_trace.commands.common import progress
from omni_trace.stack.jaeger_build import ensure_jaeger
from omni_trace.stack.kafka import ensure_kafka
from omni_trace.stack.settings import StackSettings


def add_parser(sub: Any) -> None:
    build = sub.add_parser("build-jaeger", help="build (or find) the cached Jaeger binary")
    build.set_defaults(func=run)
    kafka = sub.add_parser(
        "build-kafka",
        help="fetch (or find) the cached Kafka broker of the scale-out trace pipeline",
        description="Fetch the Apache Kafka broker's jars from Maven Central with Maven "
        "(tools/kafka/pom.xml) into ~/.cache/omni-trace/kafka/<hash of the pom>/, once.",
    )
    kafka.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.command == "build-kafka":
        print(ensure_kafka(progress))
    else:
        print(ensure_jaeger(progress, StackSettings().jaeger_bin))
    return 0
