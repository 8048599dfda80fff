"""The API reference is generated from the wire models and kept in step with them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from livedash.cli import app
from livedash.metrics.definitions import METRIC_NAMES
from livedash.realtime.apidoc import EVENTS, render_api_doc

API_DOC = Path(__file__).parent.parent / "docs" / "api.md"


def test_committed_api_doc_is_the_generated_one() -> None:
    assert API_DOC.read_text() == render_api_doc(), "run `livedash api-doc > docs/api.md`"


def test_every_event_and_metric_is_documented_with_a_valid_example() -> None:
    document = render_api_doc()
    for _, event, model, example, _ in EVENTS:
        assert f"### `{event}`" in document
        assert model.model_validate(example.model_dump(mode="json", by_alias=True)) == example
    for metric in METRIC_NAMES:
        assert f"| `{metric}` |" in document


def test_cli_prints_the_reference() -> None:
    result = CliRunner().invoke(app, ["api-doc"])
    assert result.exit_code == 0
    assert result.output == render_api_doc()
