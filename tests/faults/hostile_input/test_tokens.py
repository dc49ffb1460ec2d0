"""Bad tokens (missing, wrong, near misses) are 401 and act on nothing; compared in fixed time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import exporter.api.auth
from tests.faults.hostile import (
    JSON,
    MANAGED,
    MUTATING,
    Target,
    assert_clear_4xx,
    raw_http,
)
from tests.support.api import TOKEN, webhook
from tests.support.faults import record

pytestmark = pytest.mark.faults


def _near_misses() -> list[str]:
    misses = [
        "",
        TOKEN[:-1],
        TOKEN + "x",
        TOKEN[1:],
        "x" + TOKEN,
        TOKEN.upper(),
        TOKEN[::-1],
        TOKEN + "\x00",
        TOKEN.replace("-", "_"),
        TOKEN * 2,
        "x" * 4000,
    ]
    for i in range(0, len(TOKEN), 3):  # one character wrong, at every third position
        misses.append(TOKEN[:i] + ("A" if TOKEN[i] != "A" else "B") + TOKEN[i + 1 :])
    return misses


async def test_missing_wrong_and_near_miss_tokens_are_401_and_act_on_nothing(
    target: Target, request: pytest.FixtureRequest
) -> None:
    headers: list[dict[str, str]] = [{}]
    headers += [{"Authorization": f"Bearer {t}"} for t in _near_misses() if "\x00" not in t]
    headers += [
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer{TOKEN}"},
        {"Authorization": f"Token {TOKEN}"},
        {"X-Api-Token": TOKEN},
        {"Cookie": f"token={TOKEN}"},
    ]
    calls = 0
    for h in headers:
        for method, template in MUTATING:
            status, body = await target.call(method, template.format(MANAGED), headers=h)
            calls += 1
            assert status == 401, (h, method, template, status)
            assert_clear_4xx(status, body, h)
        status, _ = await target.call(
            "POST", "/api/v1/alerts", json=webhook(), headers={**h, **JSON}
        )
        assert status == 401
    # A NUL in the header value never gets through either.
    status, _ = await raw_http(
        target.port,
        b"POST /api/v1/containers/app-abcdef12-0001/stop HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\x00".encode(),
    )
    assert 400 <= status < 500
    # A header far over aiohttp's limit is a 4xx from the HTTP layer, not a crash.
    status, _ = await raw_http(
        target.port,
        b"GET /api/v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"x" * 20000,
    )
    assert 400 <= status < 500
    assert target.driver.acted == []
    # The right token is accepted (so the refusals above are about the token).
    status, _ = await target.call("POST", f"/api/v1/containers/{MANAGED}/restart")
    assert status == 200
    record(request, "bad tokens", headers_tried=len(headers), calls=calls, accepted=0)


def test_token_comparison_is_constant_time_in_the_code() -> None:
    source = Path(exporter.api.auth.__file__).read_text()
    tree = ast.parse(source)
    digests = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    assert len(digests) == 1, "the token must be compared with hmac.compare_digest"
    secret_names = {"token", "expected", "given", "given_bytes"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
        ):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & secret_names, f"line {node.lineno}: == on the token"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in ("startswith", "endswith") or not (
                {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & {"expected"}
            ), f"line {node.lineno}: prefix compare on the token"
