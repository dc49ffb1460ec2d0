"""What the hostile-input tests share: a driver that records every action, raw HTTP, names,
the routes under attack and the client that attacks them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from exporter.config import Settings
from exporter.errors import NotFoundError
from exporter.models import ContainerCreateOptions
from exporter.testing import FakeDriver
from tests.support.api import AUTH

MANAGED = "app-abcdef12-0001"
#: A managed name the engine does not have.
MANAGED_MISSING = "app-abcdef12-00ff"
UNMANAGED = "postgres"

#: Container names an attacker might put in a path, a body or an alert label.
HOSTILE_NAMES: tuple[str, ...] = (
    UNMANAGED,
    "..",
    ".",
    "../info",
    "../../images/local%2Fbusybox",
    f"{MANAGED}/../{UNMANAGED}",
    f"{UNMANAGED}/../{MANAGED}",
    "a/b",
    "/etc/passwd",
    f"{MANAGED}\x00",
    f"{MANAGED}\x00{UNMANAGED}",
    f"{MANAGED}\n",
    f" {MANAGED}",
    f"{MANAGED};rm -rf /",
    f"{MANAGED} && reboot",
    "$(id)",
    "`id`",
    f"{MANAGED}|cat",
    f"{MANAGED}$IFS",
    "app-ABCDEF12-0001",  # upper-case hex is not the pattern
    "\u0430pp-abcdef12-0001",  # a Cyrillic "a"
    "app-abcdef12-0001\u200b",  # a zero-width space
    "app-abcdef12-1",
    "app-" + "a" * 5000 + "-0001",
    "%2e%2e",
)


class RecordingDriver(FakeDriver):
    """A FakeDriver that remembers every mutating call and the name it was for."""

    def __init__(self) -> None:
        super().__init__()
        self.acted: list[tuple[str, str]] = []

    async def container_create(self, opts: ContainerCreateOptions):  # type: ignore[no-untyped-def]
        self.acted.append(("create", opts.name))
        return await super().container_create(opts)

    async def container_start(self, name_or_id: str) -> None:
        self.acted.append(("start", name_or_id))
        await super().container_start(name_or_id)

    async def container_stop(self, name_or_id: str) -> None:
        self.acted.append(("stop", name_or_id))
        await super().container_stop(name_or_id)

    async def container_remove(self, name_or_id: str) -> None:
        self.acted.append(("remove", self._name_of(name_or_id)))
        await super().container_remove(name_or_id)

    async def container_rename(self, name_or_id: str, new_name: str) -> None:
        self.acted.append(("rename", self._name_of(name_or_id)))
        await super().container_rename(name_or_id, new_name)

    def _name_of(self, name_or_id: str) -> str:
        """Return the name of the container an id names (the deployer acts by id)."""
        try:
            return self.find(name_or_id).name
        except NotFoundError:
            return name_or_id

    async def image_pull(self, image: str) -> None:
        self.acted.append(("pull", image))
        await super().image_pull(image)


async def raw_http(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request exactly as given (no client normalises it); return (status, body).

    ``head`` is the request line and headers without the blank line. The answer
    is read by its Content-Length, not to EOF: a server may linger on a
    connection whose request body it did not read.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(10):
            header = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = header.decode("latin-1").split("\r\n")
            parts = status_line.split()
            assert len(parts) >= 2, header[:200]
            assert parts[0].startswith("HTTP/1."), header[:200]
            length = next(
                (
                    int(v)
                    for k, _, v in (ln.partition(":") for ln in lines)
                    if k.strip().lower() == "content-length"
                ),
                0,
            )
            answer = await reader.readexactly(length)
    finally:
        writer.close()
    return int(parts[1]), answer


MAX_BODY = 4096


JSON = {"Content-Type": "application/json"}


#: Every route that takes a JSON body.
BODY_ROUTES = ("/api/v1/containers", "/api/v1/images/pull", "/api/v1/replicas", "/api/v1/alerts")


MUTATING = (
    ("POST", "/api/v1/containers/{}/start"),
    ("POST", "/api/v1/containers/{}/stop"),
    ("POST", "/api/v1/containers/{}/restart"),
    ("DELETE", "/api/v1/containers/{}"),
    ("DELETE", "/api/v1/remediation/quarantine/{}"),
)


@dataclass
class Target:
    """The API under attack: its address, its engine, a client and its settings."""

    base: str
    port: int
    driver: RecordingDriver
    http: aiohttp.ClientSession
    settings: Settings

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        """Send a request (with the token unless headers say otherwise); return (status, body)."""
        async with self.http.request(
            method, self.base + path, headers=AUTH if headers is None else headers, **kw
        ) as r:
            raw = await r.read()
            body: Any = raw
            if r.content_type == "application/json" and raw:
                body = json.loads(raw)
            return r.status, body


def assert_clear_4xx(status: int, body: Any, what: object) -> None:
    """A 4xx with the JSON error body every error of the service has."""
    assert 400 <= status < 500, (what, status, body)
    assert isinstance(body, dict), (what, status, body)
    assert body.get("error"), (what, status, body)
