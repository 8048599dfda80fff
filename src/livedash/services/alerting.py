"""Alerts and what follows them: rules, silences, notifications and the anomaly watch."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.alerts.anomaly_watch import AnomalyWatch
from livedash.alerts.config import AlertConfig, parse_alert_config, scaled
from livedash.alerts.lifecycle import AlertDesk
from livedash.alerts.rulebook import RuleBook
from livedash.alerts.rules import read_rules_file
from livedash.alerts.service import AlertService
from livedash.alerts.silences import Silencer
from livedash.cluster.runner import FeedRunner
from livedash.metrics.clock import Clock
from livedash.notifications.delivery import DeliveryWorker
from livedash.notifications.dispatcher import Dispatcher
from livedash.realtime.outbox import RoomScreens
from livedash.services.senders import email_sender, push_sender
from livedash.settings import Settings


@dataclass(frozen=True, slots=True)
class Alerting:
    """The alerting parts of a process, each registered with the feed where it must run."""

    alerts: AlertService
    alert_desk: AlertDesk
    silencer: Silencer
    dispatcher: Dispatcher
    deliveries: DeliveryWorker
    anomalies: AnomalyWatch
    rulebook: RuleBook


async def build_alerting(
    stack: AsyncExitStack,
    settings: Settings,
    database: AsyncEngine,
    runner: FeedRunner,
    screens: RoomScreens,
    clock: Clock,
) -> Alerting:
    """Evaluation and notification run on the leader; the rulebook and silences anywhere."""
    document, source = read_rules_file(settings.alert_rules_file)
    alerting = scaled(parse_alert_config(document, source=source), settings.alert_time_scale)
    rulebook = RuleBook(database, document, time_scale=settings.alert_time_scale)
    silencer = Silencer(database, settings.zone, alerting.mute_timings)
    deliveries = DeliveryWorker(
        database,
        clock,
        settings.zone,
        hospital=settings.hospital_name,
        public_url=settings.public_url,
        email=email_sender(settings),
        push=await push_sender(stack, settings),
        lease=timedelta(seconds=settings.delivery_lease_seconds),
    )
    runner.lead(deliveries.run)  # e-mails and pushes leave from the leader
    dispatcher = Dispatcher(
        database,
        screens,
        clock,
        settings.zone,
        silenced=silencer.silenced,
        deliveries=deliveries,
    )
    alerts = AlertService(
        alerting.rules,
        database,
        screens,
        clock,
        settings.zone,
        stale_after_seconds=settings.alert_stale_after_seconds,
        listeners=[dispatcher.on_alert],
    )
    runner.register(alerts)  # evaluated where the feed is read: on the leader
    anomalies = AnomalyWatch(
        alerting.anomaly_rules,
        database,
        screens,
        clock,
        settings.zone,
        stale=lambda: alerts.stale,
        tell=alerts.announce,
    )
    runner.lead(anomalies.while_leading)

    async def apply_rules(config: AlertConfig) -> None:
        silencer.mute_timings = config.mute_timings
        await alerts.replace_rules(config.rules)
        await anomalies.replace_rules(config.anomaly_rules)

    rulebook.on_change(apply_rules)
    runner.lead(rulebook.follow)  # rules set through the API reach the leader
    desk = AlertDesk(database, screens, clock, lambda: alerts.rules, announce=alerts.announce)
    return Alerting(alerts, desk, silencer, dispatcher, deliveries, anomalies, rulebook)
