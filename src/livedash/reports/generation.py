"""A report request turned into a document: which builder, which scope, where it comes from.

Each document records the feed position it was computed at, the generator's version and its
parameters, so that regenerating it later either gives the same figures (the same
`figures_digest`) or can say why not (`livedash.reports.service.ReportService.verify`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from livedash.errors import InvalidPayload
from livedash.reports.catalogue import REPORT_TYPES
from livedash.reports.document import ReportDocument, ReportPeriod
from livedash.reports.inputs import ReportInputs, Scope, Window
from livedash.reports.periods import MAX_PERIOD_DAYS

GENERATOR_VERSION = "livedash-reports/1"
"""Raised whenever a figure's definition changes: a report of another version may differ."""

FORMATS = ("json", "csv", "pdf")


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What to generate, for whom."""

    report_type: str
    scope: Scope
    period: ReportPeriod
    format: str
    requested_by: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.report_type not in REPORT_TYPES:
            raise InvalidPayload(
                f"unknown report type {self.report_type!r}; one of: {', '.join(REPORT_TYPES)}",
                report_type=self.report_type,
            )
        if self.format not in FORMATS:
            raise InvalidPayload(
                f"unknown format {self.format!r}; one of: {', '.join(FORMATS)}",
                format=self.format,
            )
        _check(self.period)

    def described(self) -> dict[str, Any]:
        """The request as stored with the report, enough to generate it again."""
        return {
            "report_type": self.report_type,
            "department": self.scope.code,
            "start": self.period.start.isoformat(),
            "end": self.period.end.isoformat(),
            "time_zone": self.period.zone,
            "label": self.period.label,
            "format": self.format,
            **self.parameters,
        }


async def build_document(
    inputs: ReportInputs, request: ReportRequest, *, hospital: str, now: datetime
) -> ReportDocument:
    """Compute the report's figures, as of the feed position read first."""
    position = await inputs.feed_position()
    title, builder = REPORT_TYPES[request.report_type]
    sections = await builder(inputs, request.scope, Window(request.period, inputs.zone))
    return ReportDocument(
        report_type=request.report_type,
        title=title,
        hospital=hospital,
        department=request.scope.code,
        department_name=request.scope.name,
        period=request.period,
        generated_at=now,
        generated_for=request.requested_by,
        generator_version=GENERATOR_VERSION,
        feed_position=position,
        parameters=request.described(),
        figures=sections.figures,
        tables=sections.tables,
        charts=sections.charts,
        notes=sections.notes,
    )


def _check(period: ReportPeriod) -> None:
    """Refuse an empty, backward or too long period: most come from `resolve_period`, which
    checks them, but a request may be built from anywhere."""
    start, end = period.start, period.end
    if start >= end:
        raise InvalidPayload(
            f"the period must end after it starts: {start.isoformat()} to {end.isoformat()}",
            start=start.isoformat(),
            end=end.isoformat(),
        )
    zone = ZoneInfo(period.zone)
    length = end.astimezone(zone).replace(tzinfo=None) - start.astimezone(zone).replace(tzinfo=None)
    if length > timedelta(days=MAX_PERIOD_DAYS):
        raise InvalidPayload(
            f"the period covers {length.days} days or more; a report covers at most "
            f"{MAX_PERIOD_DAYS} days",
            max_days=MAX_PERIOD_DAYS,
        )


def figures_digest(document: ReportDocument) -> str:
    """SHA-256 of the report's figures and tables alone: equal for equal figures, whenever
    and for whomever they were generated."""
    body = document.as_dict()
    canonical = json.dumps(
        {"figures": body["figures"], "tables": body["tables"]}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
