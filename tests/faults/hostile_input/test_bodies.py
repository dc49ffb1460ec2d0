"""Hostile bodies: oversized, deeply nested, mis-encoded or mis-typed, each a clear 4xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.faults.hostile import (
    BODY_ROUTES,
    JSON,
    MANAGED,
    MAX_BODY,
    Target,
    assert_clear_4xx,
    raw_http,
)
from tests.support.api import AUTH, TOKEN

pytestmark = pytest.mark.faults


async def test_oversized_bodies_are_413_declared_or_chunked(target: Target) -> None:
    big = json.dumps({"name": MANAGED, "image": "x", "env": ["A=" + "x" * MAX_BODY]}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    for path in BODY_ROUTES:
        status, body = await target.call("POST", path, data=big, headers={**AUTH, **JSON})
        assert status == 413, (path, status, body)
        assert body["detail"]["max_bytes"] == MAX_BODY
        # Chunked: no Content-Length for the server to refuse up front.
        status, body = await target.call("POST", path, data=chunks(), headers={**AUTH, **JSON})
        assert status == 413, (path, status, body)
    # 10 MiB declared, a little over the limit sent: refused without waiting for the rest.
    status, _ = await raw_http(
        target.port,
        b"POST /api/v1/images/pull HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 10485760",
        b"[" * (MAX_BODY + 1),
    )
    assert status == 413
    assert target.driver.acted == []


@pytest.mark.parametrize("depth", [64, 1000, MAX_BODY // 2 - 8])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
async def test_deeply_nested_json_is_a_clear_4xx(target: Target, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    payload = (opener * depth + "1" + closer * depth).encode()[:MAX_BODY]
    for path in BODY_ROUTES:
        status, body = await target.call("POST", path, data=payload, headers={**AUTH, **JSON})
        assert_clear_4xx(status, body, (path, depth))
    assert target.driver.acted == []


@pytest.mark.parametrize(
    "payload",
    [
        b'{"image": "\xff"}',  # a byte that is never UTF-8
        b'{"image": "\xc0\xaf"}',  # an overlong "/"
        b'{"image": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"image": "\xe2\x82"}',  # a truncated sequence
        b"\xff\xfe{\x00}\x00",  # UTF-16 with a BOM
        b"\xef\xbb\xbf" + b'{"image": "busybox"}',  # a UTF-8 BOM
    ],
)
async def test_invalid_utf8_is_400(target: Target, payload: bytes) -> None:
    for path in BODY_ROUTES:
        status, body = await target.call("POST", path, data=payload, headers={**AUTH, **JSON})
        assert_clear_4xx(status, body, (path, payload))
        assert status == 400, (path, payload, body)
    assert target.driver.acted == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonp",
        "application/octet-stream",
        "json",
        "text/json; charset=utf-8",
    ],
)
async def test_wrong_content_types_are_415(target: Target, content_type: str) -> None:
    data = json.dumps({"image": "local/busybox:latest"}).encode()
    for path in BODY_ROUTES:
        status, body = await target.call(
            "POST", path, data=data, headers={**AUTH, "Content-Type": content_type}
        )
        assert status == 415, (path, content_type, body)
        assert_clear_4xx(status, body, path)
    assert target.driver.acted == []
