"""What tells how this process is: readiness, the instance board, the main application's
poller."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.cluster.instances import InstanceBoard
from livedash.cluster.leader import LeaderElection
from livedash.cluster.probes import FeedLagReader, database_probe, feed_probe, job_queue_probe
from livedash.cluster.runner import FeedRunner
from livedash.cluster.shared_redis import SharedRedis
from livedash.metrics.clock import Clock
from livedash.observability.readiness import (
    Instant,
    Readiness,
    breaker_check,
    connections_check,
    memory_probe,
)
from livedash.observability.status import ServiceStatus
from livedash.observability.upstream import UpstreamPoller, polled
from livedash.realtime.gateway import Gateway
from livedash.realtime.socket_workers import SocketWorkers
from livedash.settings import Settings


async def build_health(
    stack: AsyncExitStack,
    settings: Settings,
    database: AsyncEngine,
    redis: SharedRedis | None,
    status: ServiceStatus,
    runner: FeedRunner,
    election: LeaderElection | None,
    gateway: Gateway,
    clock: Clock,
    socket_workers: SocketWorkers | None,
) -> tuple[InstanceBoard, Readiness, FeedLagReader, UpstreamPoller | None]:
    """Readiness's checks, the instance board (GET /api/realtime/stats, `livedash status`) and
    the main application's poller, whose verdict the leader publishes as `main_app_up`."""
    upstream = await stack.enter_async_context(
        polled(
            settings.main_app_health_url,
            interval=settings.main_app_poll_seconds,
            request_timeout=settings.main_app_timeout_seconds,
        )
    )
    feed_lag = FeedLagReader(runner, database, sqlite=election is None)

    def report() -> dict[str, object]:
        verdict = readiness.report()
        lag = feed_lag.latest
        leading = runner.pipeline is not None and (election is None or election.leading)
        return {
            **gateway.stats().as_dict(),
            "role": "leader" if leading else "follower",
            "feed_lag_seconds": lag.seconds if lag is not None else None,
            "ready": verdict.ready,
            "failing": verdict.failing,
            **({"socket_workers": socket_workers.figures()} if socket_workers else {}),
        }

    board = InstanceBoard(redis, report)

    async def leader_lag() -> float | None:
        leader = await board.leader()
        lag = leader.get("feed_lag_seconds") if leader is not None else None
        return float(lag) if isinstance(lag, int | float) else None

    instant: list[Instant] = [
        connections_check(
            # Each process (the main one, each socket worker) holds up to the cap.
            lambda: gateway.transports,
            settings.max_connections * (1 + settings.socket_workers),
            lambda: gateway.draining,
        )
    ]
    if status.cache is not None:
        cache = status.cache
        instant.append(lambda: breaker_check("redis", cache, what="Redis"))
    if upstream is not None:
        instant.append(upstream.check)
    probes = [
        database_probe(database, status.database),
        feed_probe(
            feed_lag,
            runner,
            max_lag_seconds=settings.ready_max_feed_lag_seconds,
            embedded=election is None,
            leader_lag=leader_lag,
        ),
        job_queue_probe(database, clock.now, max_waiting=settings.ready_max_waiting_jobs),
        memory_probe(settings.ready_max_memory_mb),
    ]
    readiness = await stack.enter_async_context(
        Readiness(instant, probes, interval=settings.ready_probe_seconds)
    )
    await stack.enter_async_context(board)
    if upstream is not None:
        poller = upstream

        async def publish_main_app() -> None:
            async for up in poller.changes():
                pipeline = runner.pipeline
                if pipeline is not None:
                    await pipeline.set_system(main_app_up=up)

        runner.lead(publish_main_app)  # the metric engine is the leader's
    return board, readiness, feed_lag, upstream
