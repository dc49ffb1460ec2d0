"""The README's metric reference is exactly what exporter.reference generates."""

from __future__ import annotations

import pytest

from exporter.metrics import CONTAINER_METRICS, GAUGES_NAMED_TOTAL, HEALTH_METRICS
from exporter.reference import END, START, metric_docs, metric_reference_markdown, readme_section
from tests.monitoring.monitoring import README


def test_readme_metric_reference_matches_the_metric_table() -> None:
    readme = README.read_text()
    assert readme.count(START) == 1
    assert readme.count(END) == 1
    assert readme_section(readme) == metric_reference_markdown(), (
        "README.md's metric reference is out of date; regenerate it with "
        "`.venv/bin/python -m exporter.reference` and paste it between the markers"
    )


def test_reference_lists_every_table_row_once_with_its_labels() -> None:
    docs = metric_docs()
    names = [d.name for d in docs]
    assert len(names) == len(set(names))
    by_name = {d.name: d for d in docs}
    for spec in CONTAINER_METRICS:
        doc = by_name[spec.name]
        assert (doc.type, doc.help) == (spec.type, spec.help)
        extra = ("state",) if spec.kind == "state" else ()
        assert doc.labels == ("name", "id", "image", "app", "replica", *extra)
    assert by_name["sysinner_container_state"].labels[-1] == "state"
    for row in HEALTH_METRICS:
        assert (by_name[row.name].type, by_name[row.name].help) == (row.type, row.help)
    assert by_name["sysinner_exporter_errors_total"].labels == ("kind",)
    for doc in docs:
        if doc.name not in GAUGES_NAMED_TOTAL:
            assert (doc.type == "counter") == doc.name.endswith("_total"), doc.name


def test_reference_rows_render_each_metric() -> None:
    table = metric_reference_markdown()
    for doc in metric_docs():
        assert f"| `{doc.name}` | {doc.type} |" in table


def test_readme_section_needs_both_markers() -> None:
    with pytest.raises(ValueError, match="lacks"):
        readme_section(f"intro\n{START}\n| a |\n")
    assert readme_section(f"x\n{START}\n| a |\n{END}\ny") == "| a |\n"


def test_readme_settings_table_matches_the_settings_model() -> None:
    from exporter.config import Settings, env_name, flag_name
    from exporter.reference import SETTINGS_END, SETTINGS_START, settings_reference_markdown

    readme = README.read_text()
    assert readme_section(readme, SETTINGS_START, SETTINGS_END) == settings_reference_markdown(), (
        "README.md's settings table is out of date; run "
        "`.venv/bin/python -m exporter.reference --write README.md`"
    )
    table = settings_reference_markdown()
    for field in Settings.model_fields:
        assert f"| `{flag_name(field)}` | `{env_name(field)}` |" in table


def test_write_rewrites_only_the_marked_sections(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from exporter.reference import SETTINGS_END, SETTINGS_START, main

    readme = Path(str(tmp_path)) / "README.md"
    readme.write_text(
        f"intro\n{START}\nSTALE-PLACEHOLDER\n{END}\nmiddle\n{SETTINGS_START}\nSTALE-PLACEHOLDER\n{SETTINGS_END}\nend\n"
    )
    main(["--write", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("end\n")
    assert "\nmiddle\n" in text
    assert "STALE-PLACEHOLDER" not in text
    assert "`--poll.interval`" in text
    assert "container_cpu_usage_seconds_total" in text
    assert "sysinner_exporter_remediation_actions_total" in text
