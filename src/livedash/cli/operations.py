"""Commands for whoever runs livedash: `doctor`, `status`, `bench`, `api-doc`, `settings-doc`,
`vapid-keys`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

import livedash
from livedash.cli import DbOption, app, console, settings_for
from livedash.errors import ConfigurationError

BENCH_SCRIPT = Path(livedash.__file__).resolve().parents[2] / "bench" / "run.py"
"""The latency bench of a source checkout (bench/ is not installed with the package)."""


@app.command()
def doctor(db: DbOption = None) -> None:
    """Check that this configuration can run the service, and say how to fix what cannot.

    Checks the settings (the signing key; on a deployment, that secrets are set), that the
    port is free or served by livedash, the database (PostgreSQL: server settings, wal2json,
    role rights, replication slot, migrations; SQLite: the file and migrations), Redis, the
    SMTP relay (connect and EHLO, no mail sent) and the Web Push key, each as configured.
    Changes nothing. Exit code 1 when a check fails: usable in scripts and before upgrades.

    Example: LIVEDASH_DATABASE_URL=postgresql+asyncpg://livedash@db/hospital livedash doctor
    """
    from livedash.doctor import run_doctor, unusable_settings

    try:
        settings = settings_for(db, refuse=False)
    except ConfigurationError as error:
        report = unusable_settings(str(error))
    else:
        with console.status("Checking..."):
            report = asyncio.run(run_doctor(settings))
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"livedash doctor: {escape(report.target)}")
    if report.note:
        out.print(escape(report.note))
    width = max((len(check.name) for check in report.checks), default=0)
    for check in report.checks:
        status = "[green]OK  [/green]" if check.ok else "[bold red]FAIL[/bold red]"
        out.print(f"{status}  {escape(check.name.ljust(width))}  {escape(check.detail)}")
        for number, line in enumerate(check.remedy.splitlines()):
            lead = "fix:" if number == 0 else "    "
            out.print(f"      {' ' * width}  {lead} {escape(line)}")
    failed = len(report.failed)
    if failed:
        out.print(f"{failed} of {len(report.checks)} checks failed.")
        raise typer.Exit(1)
    out.print(f"All {len(report.checks)} checks passed.")


@app.command()
def status(
    url: Annotated[
        str | None,
        typer.Option(help="Ask the instance at this URL instead (default: Redis's board)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LIVEDASH_STATUS_TOKEN",
            help="A super_admin token, for the role, sockets and lag of an instance asked "
            "over HTTP (not needed with Redis).",
        ),
    ] = None,
) -> None:
    """Show every running instance: role, readiness, sockets, feed lag, version, uptime.

    With LIVEDASH_REDIS_URL set (a deployment), reads the instances' reports from Redis
    directly, with the service's own settings: no token needed. Without Redis, asks the
    instance on this machine (LIVEDASH_HOST, LIVEDASH_PORT) for its /health/ready. Changes
    nothing. Exit code 1 when no instance answers or one is not ready.

    Example: LIVEDASH_REDIS_URL=redis://cache:6379/0 livedash status
    """
    from livedash.cluster.deployment import run_status, status_table

    found = asyncio.run(run_status(settings_for(), url=url, token=token))
    Console(soft_wrap=True, highlight=False).print(status_table(found))
    if found.problem is not None:
        console.print(escape(found.problem))
    if not found.healthy:
        raise typer.Exit(1)


@app.command()
def bench(
    sockets: Annotated[
        str, typer.Option(help="Comma-separated numbers of clients, one run each (100,1000).")
    ] = "100",
    writes_per_second: Annotated[
        float, typer.Option(min=0.1, max=1000, help="Patients inserted (or emits) per second.")
    ] = 40.0,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Seconds measured.")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, max=60, help="Unmeasured seconds first.")] = 2.0,
    scenarios: Annotated[
        str,
        typer.Option(help="Comma-separated servers to run: node, python, livedash (all)."),
    ] = "node,python,livedash",
    clients: Annotated[
        str | None,
        typer.Option(
            help="node (the npm socket.io-client, if installed) or python (python-socketio)."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also save the table here as JSON.")
    ] = None,
    socket_workers: Annotated[
        int, typer.Option(min=0, max=64, help="livedash's socket workers (every process counted).")
    ] = 0,
    server_cpus: Annotated[
        str | None, typer.Option(help="CPUs the servers run on, as taskset takes them (1 or 2-3).")
    ] = None,
    client_cpus: Annotated[
        str | None, typer.Option(help="CPUs the bench, its clients and writer run on (0).")
    ] = None,
) -> None:
    """Measure livedash against bare Node socket.io and bare python-socketio on this machine.

    Runs bench/run.py (from the source checkout): each server broadcasts the same room to the
    same clients, which run in processes of their own; livedash on a temporary SQLite database
    with a writer inserting patients. Prints one table: latency percentiles, values delivered,
    server memory and CPU, and livedash's p99 against each baseline's. Touches no configured
    database; everything it starts is stopped and deleted. Run it on an otherwise idle machine.

    Example: livedash bench --sockets 100,1000 --writes-per-second 200 --json bench.json

    With --server-cpus and --client-cpus the servers and the load get cores of their own.
    """
    if not BENCH_SCRIPT.is_file():
        console.print(
            f"The bench comes with livedash's source (bench/run.py), not found at "
            f"{BENCH_SCRIPT}: run this from a checkout installed with `pip install -e .`."
        )
        raise typer.Exit(1)
    command = [sys.executable, str(BENCH_SCRIPT), "--sockets", sockets, "--scenarios", scenarios]
    command += ["--writes-per-second", f"{writes_per_second:g}", "--seconds", f"{seconds:g}"]
    command += ["--warmup", f"{warmup:g}", "--socket-workers", str(socket_workers)]
    if clients is not None:
        command += ["--clients", clients]
    if json_out is not None:
        command += ["--json", str(json_out)]
    if server_cpus is not None:
        command += ["--server-cpus", server_cpus]
    if client_cpus is not None:
        command += ["--client-cpus", client_cpus]
    with (
        console.status(f"Benchmarking {scenarios} with {sockets} sockets..."),
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as process,
    ):
        for line in process.stdout or ():
            typer.echo(line.rstrip("\n"))
    if process.returncode:
        console.print(f"The bench failed (exit code {process.returncode}); see above.")
        raise typer.Exit(process.returncode)


@app.command("api-doc")
def api_doc() -> None:
    """Print the realtime API reference (Markdown) generated from the wire models.

    docs/api.md is this output. Example: livedash api-doc > docs/api.md
    """
    from livedash.app import api_reference

    typer.echo(api_reference(), nl=False)


@app.command("settings-doc")
def settings_doc() -> None:
    """Print the table of every setting (Markdown): variable, type, default, description.

    docs/settings.md is this output. Example: livedash settings-doc > docs/settings.md
    """
    from livedash.settings_doc import settings_table

    typer.echo(settings_table(), nl=False)


@app.command("vapid-keys")
def vapid_keys(
    out: Annotated[Path, typer.Option(help="Where to write the private key (PEM, mode 0600).")],
) -> None:
    """Create the Web Push (VAPID) key pair that signs push notifications to browsers.

    Writes the private key to --out (for LIVEDASH_VAPID_PRIVATE_KEY_FILE) and prints the
    public key for reference. Never overwrites a key: browsers subscribed with the old one
    would stop getting pushes.

    Example: livedash vapid-keys --out /etc/livedash/vapid.pem
    """
    from livedash.notifications.push import generate_vapid_keys

    if out.exists():
        typer.echo(f"{out} exists: not overwritten (remove it first to make a new key)", err=True)
        raise typer.Exit(1)
    keys = generate_vapid_keys()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_text(keys.private_key_pem)
    typer.echo(f"private key written to {out}; set LIVEDASH_VAPID_PRIVATE_KEY_FILE={out}")
    typer.echo(f"public key (browsers get it from /api/notifications/push/key): {keys.public_key}")
