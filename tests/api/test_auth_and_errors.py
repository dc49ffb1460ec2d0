"""Auth (off, on, missing, wrong, near-miss) and every error status the API answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.errors import ConflictError, DriverTimeoutError, EngineUnreachableError
from exporter.testing import FakeDriver
from tests.support.api import AUTH, TOKEN, Api, ClientFactory, Clock, build_app, start_api
from tests.support.api import settings_for as make_settings

MANAGED = "app-abcdef12-0001"


@pytest.fixture
def api_driver() -> FakeDriver:
    fake = FakeDriver()
    fake.add(MANAGED)
    return fake


# -- auth --------------------------------------------------------------------


async def test_api_is_off_without_a_token_and_says_how_to_turn_it_on(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, api_token=None)
    app, *_ = build_app(settings, FakeDriver(), Clock())
    client = await aiohttp_client(app)
    for path in ("/api/v1/info", "/api/v1/containers", "/api/v1/nope", "/api"):
        resp = await client.get(path, headers=AUTH)
        assert resp.status == 403, path
        body = await resp.json()
        assert body["error"] == "lifecycle API disabled"
        assert "EXPORTER_API_TOKEN" in body["detail"]
        assert "--api.token-file" in body["detail"]
    # Observability stays open.
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/metrics")).status == 200


async def test_empty_token_keeps_the_api_off(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    app, *_ = build_app(make_settings(tmp_path, api_token=""), FakeDriver(), Clock())
    client = await aiohttp_client(app)
    resp = await client.get("/api/v1/info", headers={"Authorization": "Bearer "})
    assert resp.status == 403


async def test_the_token_file_wins_over_the_token_variable(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    settings = make_settings(tmp_path, api_token_file=token_file)
    app, *_ = build_app(settings, FakeDriver(), Clock())
    client = await aiohttp_client(app)
    assert (await client.get("/api/v1/ping", headers=AUTH)).status == 401
    ok = await client.get("/api/v1/ping", headers={"Authorization": "Bearer from-file"})
    assert ok.status == 200


async def test_missing_token_is_401_with_www_authenticate(api: Api) -> None:
    resp = await api.client.get("/api/v1/info")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert (await resp.json())["error"] == "authentication required"


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}x",  # one character more
        f"Bearer {TOKEN[:-1]}",  # one character less
        f"Bearer {TOKEN[:-1]}X",  # last character wrong
        f"Bearer {TOKEN.upper()}",
        "Bearer " + "é" * 10,  # not ASCII
    ],
)
async def test_wrong_and_near_miss_tokens_are_401(api: Api, header: str) -> None:
    resp = await api.client.get("/api/v1/info", headers={"Authorization": header})
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("header", [TOKEN, f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer"])
async def test_other_schemes_are_401(api: Api, header: str) -> None:
    resp = await api.client.get("/api/v1/info", headers={"Authorization": header})
    assert resp.status == 401


async def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    resp = await api.client.get("/api/v1/ping", headers={"Authorization": f"bearer {TOKEN}"})
    assert resp.status == 200


async def test_unknown_api_paths_need_the_token_before_404(api: Api) -> None:
    assert (await api.client.get("/api/v1/secret-thing")).status == 401
    status, body = await api.call("GET", "/api/v1/secret-thing")
    assert status == 404
    assert body == {"error": "not found", "detail": None}


async def test_observability_stays_open_with_a_token(api: Api) -> None:
    for path in ("/metrics", "/healthz"):
        assert (await api.client.get(path)).status == 200
    # readyz answers without auth too (503 here: nothing has polled yet).
    assert (await api.client.get("/readyz")).status == 503


async def test_wrong_token_on_a_mutating_call_touches_nothing(api: Api) -> None:
    # A wrong token on a mutating call touches nothing.
    resp = await api.client.post(
        f"/api/v1/containers/{MANAGED}/stop", headers={"Authorization": "Bearer nope"}
    )
    assert resp.status == 401
    assert api.driver.calls["container_stop"] == 0


# -- error statuses ------------------------------------------------------------


async def test_400_malformed_json(api: Api) -> None:
    resp = await api.client.post(
        "/api/v1/containers",
        data=b'{"name": "app-abcdef12-0002",',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "request body is not valid JSON"
    assert body["detail"]


async def test_400_invalid_utf8_and_empty_body(api: Api) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    resp = await api.client.post("/api/v1/containers", data=b'{"name": "\xff"}', headers=headers)
    assert resp.status == 400
    assert "UTF-8" in (await resp.json())["error"]
    resp = await api.client.post("/api/v1/containers", data=b"  ", headers=headers)
    assert resp.status == 400


async def test_400_bad_query_parameter(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/containers?all=maybe")
    assert status == 400
    assert "all" in body["error"]
    status, _ = await api.call("GET", "/api/v1/remediation/history?limit=0")
    assert status == 400


async def test_415_wrong_content_type(api: Api) -> None:
    resp = await api.client.post(
        "/api/v1/images/pull",
        data="image=x",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415
    assert api.driver.calls["image_pull"] == 0


async def test_a_body_without_content_type_is_read_as_json(api: Api) -> None:
    resp = await api.client.post(
        "/api/v1/images/pull",
        data=json.dumps({"image": "local/other:1"}).encode(),
        skip_auto_headers=["Content-Type"],
        headers=AUTH,
    )
    assert resp.status == 200, await resp.text()


async def test_413_body_over_the_limit(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    api = await start_api(aiohttp_client, make_settings(tmp_path, api_max_body_bytes=4096))
    big = {"name": "app-abcdef12-0002", "image": "local/busybox:latest", "env": ["A=" + "x" * 8000]}
    status, body = await api.call("POST", "/api/v1/containers", json=big)
    assert status == 413
    assert body["detail"]["max_bytes"] == 4096
    assert api.driver.calls["container_create"] == 0


async def test_422_names_the_field(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/api/v1/containers",
        json={
            "name": "app-abcdef12-0002",
            "image": "local/busybox:latest",
            "mounts": [{"host_path": "relative/dir", "container_path": "/data"}],
        },
    )
    assert status == 422
    assert body["error"].startswith("invalid mounts.0.host_path:")
    assert body["detail"][0]["field"] == "mounts.0.host_path"


async def test_422_unknown_fields_are_refused(api: Api) -> None:
    # The model has no privileged / host-namespace fields, and none may be smuggled in.
    status, body = await api.call(
        "POST",
        "/api/v1/containers",
        json={"name": "app-abcdef12-0002", "image": "local/busybox:latest", "privileged": True},
    )
    assert status == 422
    assert body["detail"][0]["field"] == "privileged"
    assert body["detail"][0]["type"] == "extra_forbidden"


async def test_422_is_strict_about_types(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/api/v1/containers",
        json={"name": "app-abcdef12-0002", "image": "local/busybox:latest", "cpu_limit": "500"},
    )
    assert status == 422
    assert body["detail"][0]["field"] == "cpu_limit"


async def test_404_unknown_container(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/containers/app-abcdef12-00ff")
    assert status == 404
    assert "app-abcdef12-00ff" in body["detail"]
    status, _ = await api.call("POST", "/api/v1/containers/app-abcdef12-00ff/stop")
    assert status == 404
    status, _ = await api.call("DELETE", "/api/v1/containers/app-abcdef12-00ff")
    assert status == 404


async def test_409_name_in_use(api: Api) -> None:
    status, body = await api.call(
        "POST", "/api/v1/containers", json={"name": MANAGED, "image": "local/busybox:latest"}
    )
    assert status == 409
    assert "already in use" in body["detail"]


async def test_409_from_the_engine_on_a_lifecycle_call(api: Api) -> None:
    api.driver.fail("container_start", ConflictError(409, "container is marked for removal"))
    status, body = await api.call("POST", f"/api/v1/containers/{MANAGED}/start")
    assert status == 409
    assert body["error"] == "conflict"


async def test_503_engine_unreachable_and_timeout(api: Api) -> None:
    api.driver.fail("info", EngineUnreachableError("cannot connect to Docker Engine via unix"))
    status, body = await api.call("GET", "/api/v1/info")
    assert status == 503
    assert body["error"] == "container engine unavailable"
    assert "cannot connect" in body["detail"]
    api.driver.fail("container_list", DriverTimeoutError("GET /containers/json: no answer"))
    status, _ = await api.call("GET", "/api/v1/containers")
    assert status == 503


async def test_405_keeps_allow_header_and_is_json(api: Api) -> None:
    resp = await api.client.request("PATCH", "/api/v1/replicas", headers=AUTH)
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == {"GET", "POST"}
    assert (await resp.json())["error"] == "method not allowed"


async def test_unexpected_exception_is_a_generic_500_and_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.driver.fail("image_list", RuntimeError("secret internals"))  # type: ignore[arg-type]
    status, body = await api.call("GET", "/api/v1/images")
    assert status == 500
    assert body["error"] == "internal error"
    assert "secret" not in json.dumps(body)
    assert "secret internals" in caplog.text
