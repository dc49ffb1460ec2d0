"""schemathesis over the whole OpenAPI document, every check on, every phase.

tests/api/test_openapi.py fuzzes with positive_data_acceptance off; here it
is on, told which answers a schema-valid request may rightly get (422: the
models check what JSON Schema cannot say, e.g. an app id that must make a
valid container name). The app runs on a driver that records every action:
afterwards, nothing may have been done to a container that is not managed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.faults.hostile import MANAGED, UNMANAGED, RecordingDriver
from tests.support.api import Clock, build_app, run_schemathesis
from tests.support.api import settings_for as make_settings
from tests.support.faults import record, run_dir, scaled_int

pytestmark = pytest.mark.faults

ServerFactory = Callable[..., Awaitable[TestServer]]
SEED = int(os.environ.get("FUZZ_SEED", "20261130"))

#: What a schema-valid request may be answered: success, or a refusal the schema
#: cannot predict (auth, policy, missing or conflicting container, model validation).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


async def test_schemathesis_every_check_every_phase(
    aiohttp_server: ServerFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    examples = scaled_int(12, 150)
    driver = RecordingDriver()
    driver.add(MANAGED)
    driver.add(UNMANAGED)
    settings = make_settings(tmp_path)
    app, *_ = build_app(settings, driver, Clock())
    run = await run_schemathesis(
        aiohttp_server,
        app,
        tmp_path,
        [
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--checks",
            "all",
            "--max-examples",
            str(examples),
            "--seed",
            str(SEED),
        ],
        deadline=scaled_int(170, 1500),
        config=CONFIG,
    )
    text, operations, elapsed = run.text, run.operations, run.seconds
    (run_dir() / "schemathesis.txt").write_text(text)
    assert run.returncode == 0, text[-8000:]
    assert f"Tested: {operations}" in text, text[-3000:]
    generated = re.search(r"(\d+) generated", text)
    assert generated is not None
    assert int(generated.group(1)) > 0, text[-3000:]
    # Nothing was done to a container the exporter does not manage.
    names = {name for verb, name in driver.acted if verb != "pull"}
    assert UNMANAGED not in names, driver.acted
    # A replica deploy also acts on its own temporaries, <name>.next and <name>.prev.
    bases = {n.removesuffix(".next").removesuffix(".prev") for n in names}
    assert all(settings.naming().is_valid(n) for n in bases), names
    record(
        request,
        "schemathesis, every check",
        operations=operations,
        max_examples=examples,
        cases=int(generated.group(1)),
        seconds=round(elapsed, 1),
        actions_on_unmanaged=0,
        actions=len(driver.acted),
    )
