"""The API reference is generated from the wire models and kept in step with them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from livedash.alerts.messages import ALERT_EVENT_DOC
from livedash.app import api_reference
from livedash.cli import app
from livedash.metrics.definitions import METRIC_NAMES
from livedash.notifications.messages import NOTIFICATION_EVENT_DOC
from livedash.realtime.apidoc import EVENTS

API_DOC = Path(__file__).parent.parent / "docs" / "api.md"


def test_committed_api_doc_is_the_generated_one() -> None:
    assert API_DOC.read_text() == api_reference(), "run `livedash api-doc > docs/api.md`"


def test_every_event_and_metric_is_documented_with_a_valid_example() -> None:
    document = api_reference()
    for _, event, model, example, _ in [*EVENTS, ALERT_EVENT_DOC, NOTIFICATION_EVENT_DOC]:
        assert f"### `{event}`" in document
        assert model.model_validate(example.model_dump(mode="json", by_alias=True)) == example
    for metric in METRIC_NAMES:
        assert f"| `{metric}` |" in document


def test_cli_prints_the_reference() -> None:
    result = CliRunner().invoke(app, ["api-doc"])
    assert result.exit_code == 0
    assert result.output == api_reference()
