"""Apache Kafka for the trace pipeline of the scale-out stack: the broker's jars from Maven
Central, fetched once by Maven and cached (keyed on tools/kafka/pom.xml, like the Jaeger build),
and run in KRaft mode (one process, broker and controller, no ZooKeeper) with the machine's Java.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from omni_trace.errors import CliError
from omni_trace.stack.paths import REPO_ROOT, cache_dir

KAFKA_POM = REPO_ROOT / "tools" / "kafka" / "pom.xml"
TOPIC = "jaeger-spans"
# Two ingesters share the topic's partitions (one consumer group); Kafka moves a stopped
# ingester's partitions to the other.
PARTITIONS = 4

Progress = Callable[[str], None]


class KafkaBuildError(CliError, RuntimeError):
    pass


def cached_libs(pom: Path = KAFKA_POM) -> Path:
    key = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    return cache_dir() / "kafka" / key / "libs"


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaBuildError("Java 17 or newer runs the Kafka broker: install openjdk-17-jre")
    return java


def ensure_kafka(progress: Progress = print) -> Path:
    """The directory of the broker's jars (fetched now if missing; about 45 MB)."""
    target = cached_libs()
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaBuildError(
            "Maven fetches the Kafka broker's jars from Maven Central: install maven "
            "(scripts/bootstrap does)"
        )
    partial = target.with_name(f"libs.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    progress(f"fetching the Kafka broker from Maven Central into {target.parent} (first run only)")
    started = time.monotonic()
    command = [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies"]
    command += [f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        tail = (run.stdout + run.stderr)[-2000:]
        raise KafkaBuildError(f"Maven could not fetch Kafka (exit {run.returncode}):\n{tail}")
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    progress(f"fetched Kafka in {time.monotonic() - started:.0f} s")
    return target


def broker_properties(data_dir: Path, host: str, port: int, controller_port: int) -> str:
    """One node that is both broker and controller; a single replica of everything."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{controller_port}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={PARTITIONS}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            # The ingesters join at once, not after the default 3 s.
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def classpath(libs: Path) -> str:
    return f"{libs}/*"


def new_cluster_id() -> str:
    """16 random bytes in URL-safe base64 (what `kafka-storage random-uuid` makes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def format_storage(
    libs: Path, config: Path, data_dir: Path, cluster_id: Callable[[], str] = new_cluster_id
) -> None:
    """KRaft needs its log directory formatted once, with a cluster id; kept across restarts."""
    if (data_dir / "meta.properties").exists():
        return
    command = [java_binary(), "-cp", classpath(libs), "kafka.tools.StorageTool", "format"]
    # One word with its option: an id may start with "-" (1 in 64), which the tool's argument
    # parser would take for an option of its own.
    command += [f"--cluster-id={cluster_id()}", f"--config={config}"]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise KafkaBuildError(f"formatting Kafka's storage failed:\n{run.stdout}{run.stderr}")


def broker_command(libs: Path, config: Path) -> list[str]:
    return [java_binary(), "-Xmx512m", "-cp", classpath(libs), "kafka.Kafka", str(config)]
