"""Fixtures of the real-engine tier."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest


@pytest.fixture
def sdk(engine: None) -> Iterator[docker.DockerClient]:
    """Return a Docker SDK client (the independent oracle), closed afterwards."""
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()
