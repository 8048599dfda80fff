"""Scheduled reports by e-mail: attached, or above a size limit a link that needs sign-in.

Each recipient is checked again when the report goes out, not only when the schedule was
made: a user deactivated, moved to another department or without an e-mail address since
receives nothing, and the run says so.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.notifications.email import EmailSender
from livedash.reports.archive import ReportInfo
from livedash.reports.formats import MEDIA_TYPES
from livedash.reports.schedules import ScheduleInfo, sort_recipients
from livedash.timeutil import as_aware

log = structlog.get_logger(__name__)


class ReportMailer:
    """Sends a finished report to its schedule's recipients."""

    def __init__(
        self,
        sender: EmailSender,
        database: AsyncEngine,
        *,
        hospital: str,
        public_url: str,
        attachment_max_bytes: int,
    ) -> None:
        self._sender = sender
        self._database = database
        self._hospital = hospital
        self._public_url = public_url.rstrip("/")
        self._max_bytes = attachment_max_bytes

    async def send(self, schedule: ScheduleInfo, report: ReportInfo, content: bytes) -> list[str]:
        """Mail the report to each recipient allowed to see it; returns the problems (an
        empty list: everyone received it). A relay that refuses raises `DeliveryError`."""
        addresses, refused = await sort_recipients(
            self._database, schedule.recipients, schedule.department
        )
        problems = [f"{username}: {reason}" for username, reason in refused.items()]
        for username, address in addresses.items():
            message = self.compose(address, schedule, report, content)
            await self._sender.deliver(address, message)
            log.info("report_mailed", report=report.id, schedule=schedule.id, to=username)
        return problems

    def compose(
        self, to: str, schedule: ScheduleInfo, report: ReportInfo, content: bytes
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._sender.sender
        message["To"] = to
        message["Subject"] = f"{self._hospital}: {schedule.name} ({report.period_label})"
        message["Date"] = format_datetime(as_aware(report.finished_at or report.created_at))
        # A domain of its own: without one, make_msgid asks DNS for this host's name, on the loop.
        message["Message-ID"] = make_msgid(f"report-{report.id}", domain="livedash")
        message["Auto-Submitted"] = "auto-generated"
        page = f"{self._public_url}/?page=reports&report={report.id}"
        link = f"{self._public_url}/api/reports/{report.id}/download"
        period = f"{report.period_start.isoformat()} to {report.period_end.isoformat()}"
        lines = [
            f"{schedule.name}: the {report.report_type} report of {self._hospital}"
            + (f", department {report.department}" if report.department else ", whole hospital"),
            f"Period: {report.period_label} ({period}, {report.time_zone})",
            f"SHA-256: {report.sha256}",
            "",
        ]
        attach = len(content) <= self._max_bytes
        if attach:
            lines.append("The report is attached.")
        else:
            lines += [
                f"The report ({len(content):,} bytes) is too large to attach. Open it in "
                f"livedash (sign-in needed): {page}",
                f"or download it over the API with an access token: {link}",
            ]
        message.set_content("\n".join(lines) + "\n")
        if attach:
            maintype, subtype = MEDIA_TYPES[report.format].split(";")[0].split("/")
            message.add_attachment(
                content,
                maintype=maintype,
                subtype=subtype,
                filename=f"{report.report_type}-{report.period_label}.{report.format}",
            )
        return message
