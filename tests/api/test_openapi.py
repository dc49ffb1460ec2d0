"""The OpenAPI document matches the routes, and schemathesis finds no server error in them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.testing import FakeDriver
from tests.support.api import Api, Clock, build_app, run_schemathesis
from tests.support.api import settings_for as make_settings

ServerFactory = Callable[..., Awaitable[TestServer]]

#: Bounded: ~30 cases per operation and phase keeps the run well under a minute.
MAX_EXAMPLES = 30
#: Fixed, so CI is reproducible; change it locally to explore further.
SEED = int(os.environ.get("FUZZ_SEED", "20261129"))


async def test_document_lists_exactly_the_api_routes(api: Api) -> None:
    status, doc = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in api.client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    assert documented == served
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]


async def test_document_describes_errors_and_bodies(api: Api) -> None:
    _, doc = await api.call("GET", "/api/v1/openapi.json")
    schemas = doc["components"]["schemas"]
    assert set(schemas["ErrorBody"]["required"]) == {"error"}
    create = doc["paths"]["/api/v1/containers"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ContainerCreateOptions"
    }
    assert schemas["ContainerCreateOptions"]["additionalProperties"] is False
    assert {"201", "400", "401", "403", "408", "409", "413", "415", "422", "503"} <= set(
        create["responses"]
    )
    replicas = doc["paths"]["/api/v1/replicas"]["post"]["responses"]
    assert {"200", "201"} <= set(replicas)
    alerts = doc["paths"]["/api/v1/alerts"]["post"]
    webhook = schemas[
        alerts["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    ]
    assert {"version", "status", "alerts"} <= set(webhook["required"])
    assert "startsAt" in json.dumps(schemas)
    # Mutating calls document the managed-name pattern they enforce; reads take any name.
    stop = doc["paths"]["/api/v1/containers/{name}/stop"]["post"]["parameters"][0]
    assert re.fullmatch(stop["schema"]["pattern"], "app-abcdef12-0001")
    assert not re.fullmatch(stop["schema"]["pattern"], "postgres")
    read = doc["paths"]["/api/v1/containers/{name}"]["get"]["parameters"][0]
    assert read["schema"] == {"type": "string"}
    # Every $ref resolves.
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)):
        assert ref in schemas


async def test_every_documented_status_is_an_error_body_or_a_model(api: Api) -> None:
    _, doc = await api.call("GET", "/api/v1/openapi.json")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (
                        method,
                        path,
                        status,
                    )


async def test_schemathesis_finds_no_server_error_and_no_schema_break(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    fake = FakeDriver()
    fake.add("app-abcdef12-0001")
    fake.add("postgres")
    settings = make_settings(tmp_path)
    app: web.Application
    app, *_ = build_app(settings, fake, Clock())
    run = await run_schemathesis(
        aiohttp_server,
        app,
        tmp_path,
        [
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--checks",
            "all",
            # Schema-valid bodies may still be 422 by design: the models check what
            # JSON Schema cannot say (name syntax, IP addresses, an app id that must
            # make a valid container name) and parse strictly (1.0 is no integer).
            "--exclude-checks",
            "positive_data_acceptance",
        ],
        # Only stops a hang: how long fuzzing takes is this machine's speed, not a property
        # of the API, and is no test's to assert.
        deadline=150,
    )
    text, operations = run.text, run.operations
    assert run.returncode == 0, text[-8000:]
    assert f"Tested: {operations}" in text, text[-3000:]
    assert re.search(r"[1-9]\d* generated", text), text[-3000:]
