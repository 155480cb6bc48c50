"""Formatting the Kafka broker's storage, with the real broker's tool: every cluster id the
runner can draw is accepted, including the 1 in 64 that start with "-"."""

from __future__ import annotations

from pathlib import Path

import pytest

from omni_trace.stack.kafka import broker_properties, ensure_kafka, format_storage

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.mark.parametrize("cluster_id", ["-LsVb9HhQc2R0eZ1a3x4Dw", "MkU3OEVBNTcwNTJENDM2Qg"])
def test_any_cluster_id_formats(tmp_path: Path, cluster_id: str) -> None:
    libs = ensure_kafka(lambda _: None)
    data = tmp_path / "kafka"
    config = tmp_path / "kafka.properties"
    config.write_text(broker_properties(data, "127.0.0.1", 19092, 19093))
    format_storage(libs, config, data, cluster_id=lambda: cluster_id)
    assert f"cluster.id={cluster_id}" in (data / "meta.properties").read_text()
