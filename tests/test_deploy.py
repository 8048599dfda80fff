"""The deployment kit in deploy/, checked with the tools an operator would use on it.

promtool checks the Prometheus configuration and runs the alert rules' unit tests,
systemd-analyze verifies the unit, docker-compose 1.x resolves the Compose file offline and
hadolint lints the Dockerfiles (`make system-deps` and the dev extras install them). What no
tool checks is run for real: the nginx configuration Compose renders proxies a served instance
(over TLS too), the image's health check tells a live instance from a dead one, the bundled
PostgreSQL's set-up passes `livedash doctor`, livedash serves and renders a PDF without
writable-and-executable memory (the unit's MemoryDenyWriteExecute), and every metric the
Grafana dashboard, the alert rules and the troubleshooting guide name is in a real scrape.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from livedash.settings import Settings
from livedash.store.migrate import upgrade_async
from livedash.testing.recorder import update_of
from livedash.testing.servers import (
    NGINX_CONFIG,
    NginxServer,
    PostgresServer,
    RedisServer,
    free_port,
    new_root,
    postgres_bindir,
    render_nginx_config,
)
from tests.support.alerting import bearer
from tests.support.instances import Instance
from tests.support.live import Connect, LiveServer, Serve
from tests.support.prometheus import scrape
from tests.support.report_schedules import POLL_SECONDS, WAIT_SECONDS, finished
from tests.support.tls import write_self_signed
from tests.support.writers import Write, register_patient

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "livedash-dashboard.json"
RULES = PROMETHEUS / "livedash-rules.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "livedash.service"
RENDER_SITE = DEPLOY / "nginx" / "render-site.sh"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
METRIC_NAME = re.compile(r"\blivedash_[a-z_]+[a-z]\b")
SETTING_NAME = re.compile(r"\bLIVEDASH_[A-Z0-9_]+[A-Z0-9]\b")
# How Grafana fills its variables, for promtool to parse the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}


def tool(name: str) -> str:
    """The path of a command-line tool the checks need; missing is a failure, not a skip."""
    found = shutil.which(
        name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    assert found, f"{name} is not installed: run `make system-deps` (and the dev extras)"
    return found


def run(*command: str | Path, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; its output is in the message of a failed assertion."""
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=120, **options
    )


def succeeded(done: subprocess.CompletedProcess[str]) -> str:
    """The command's output, once it is known to have exited 0."""
    assert done.returncode == 0, (
        f"{done.args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done.stdout + done.stderr


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/livedash-rules.yml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def compose_file() -> dict[str, Any]:
    """deploy/docker-compose.yml as written (not interpolated)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """KEY=value lines of an env file (with `commented`, also those commented out)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if commented and re.match(r"#[A-Z][A-Z0-9_]*=", text):
            text = text[1:]
        if text and not text.startswith("#"):
            key, separator, value = text.partition("=")
            assert separator, f"not KEY=value in {path.name}: {line!r}"
            values[key] = value
    return values


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of a Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if pending.strip():
                name, _, arguments = pending.strip().partition(" ")
                instructions.append((name.upper(), arguments.strip()))
            pending = ""
    return instructions


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# --- Prometheus and Grafana -------------------------------------------------------------------


def test_prometheus_config_and_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = tool("promtool")
    checked = succeeded(run(promtool, "check", "config", PROMETHEUS / "prometheus.yml"))
    assert f"{len(alert_rules())} rules found" in checked
    tested = succeeded(run(promtool, "test", "rules", "livedash-rules.test.yml", cwd=PROMETHEUS))
    assert "SUCCESS" in tested


def test_the_rules_unit_tests_fail_when_a_rule_is_wrong(tmp_path: Path) -> None:
    # The unit tests hold the rules: a leader alert that ignores the `or vector(0)` case, or
    # fires at once, is caught.
    for name in ("livedash-rules.yml", "livedash-rules.test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    rules = tmp_path / "livedash-rules.yml"
    text = rules.read_text()
    wrong = text.replace(
        '(sum(livedash_leader{job="livedash"}) or vector(0)) == 0',
        'sum(livedash_leader{job="livedash"}) == 0',
    )
    assert wrong != text
    rules.write_text(wrong)
    done = run(tool("promtool"), "test", "rules", "livedash-rules.test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "LivedashNoLeader" in done.stdout + done.stderr


def test_the_grafana_dashboard_imports_with_a_data_source_variable_and_its_queries_parse(
    tmp_path: Path,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "livedash"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["multi"]
    assert variables["instance"]["includeAll"]
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == source for target in panel["targets"])
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
    assert {variables["job"]["datasource"]["uid"], variables["instance"]["datasource"]["uid"]} == {
        "${DS_PROMETHEUS}"
    }

    # promtool parses each query as Prometheus will, once Grafana has filled its variables.
    records = []
    for number, query in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        records.append({"record": f"dashboard:query_{number}", "expr": query})
    parsed = tmp_path / "dashboard-queries.yml"
    parsed.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    succeeded(run(tool("promtool"), "check", "rules", parsed))


def test_every_alert_leads_to_a_section_of_the_troubleshooting_guide() -> None:
    anchors = {
        heading_anchor(line.lstrip("#"))
        for line in TROUBLESHOOTING.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in alert_rules():
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/troubleshooting.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {sorted(anchors)}"
        assert rule["labels"]["severity"] in {"warning", "critical"}


def test_the_guides_links_lead_to_files_and_sections_that_exist() -> None:
    for guide in (TROUBLESHOOTING, ROOT / "docs" / "deploy.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", guide.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            name, _, anchor = target.partition("#")
            page = guide.parent / name if name else guide
            assert page.exists(), f"{guide.name}: {target}"
            if anchor:
                found = {
                    heading_anchor(line.lstrip("#"))
                    for line in page.read_text().splitlines()
                    if line.startswith("#")
                }
                assert anchor in found, f"{guide.name}: {target}"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_every_metric_the_dashboard_alerts_and_guide_name_is_exported(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
    tmp_path: Path,
) -> None:
    wanted: dict[str, set[str]] = {}
    for source, texts in (
        ("the Grafana dashboard", dashboard_queries()),
        ("the alert rules", [rule["expr"] for rule in alert_rules()]),
        ("docs/troubleshooting.md", [TROUBLESHOOTING.read_text()]),
    ):
        for text in texts:
            for name in METRIC_NAME.findall(text):
                wanted.setdefault(name, set()).add(source)
    assert "livedash_update_latency_seconds_bucket" in wanted

    # Production (PostgreSQL and Redis), and the embedded default, whose feed reports pending
    # changes instead of WAL bytes; the embedded one watches the other as its main application.
    production = await serve()
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'embedded.db'}"
    await upgrade_async(sqlite_url)
    embedded = await serve(
        settings.model_copy(
            update={
                "database_url": sqlite_url,
                "redis_url": None,
                "main_app_health_url": f"{production.url}/health/live",
                "ready_probe_seconds": 0.2,
                "main_app_poll_seconds": 0.2,
            }
        )
    )

    screen = await connect(production, token())
    await screen.call("subscribe_metrics", {"metrics": ["patients_total"]})
    refused = await connect(production, "not-a-token", wait_auth=False)
    assert (await refused.next("auth_error"))["code"] == "invalid_token"
    await register_patient(writer, hospital["ED"], "seen on the wall")
    await screen.next("dashboard_update", update_of("patients_total", "ED", 2))
    async with httpx.AsyncClient(base_url=production.url) as http:
        headers = bearer(token())
        queued = await http.post(
            "/api/reports",
            headers=headers,
            json={"type": "occupancy", "period": "yesterday", "format": "pdf"},
        )
        assert queued.status_code == 202, queued.text
        assert (await finished(http, queued.headers["location"], headers))["status"] == "done"

    # Gauges measured by background probes appear after their first round: scrape as
    # Prometheus would, until every name is there or the time is up.
    exported: set[str] = set()
    stages: set[str] = set()
    clock = asyncio.get_running_loop()
    deadline = clock.time() + WAIT_SECONDS
    while not wanted.keys() <= exported and clock.time() < deadline:
        for server in (production, embedded):
            scraped = await scrape(server.url)
            exported |= exported_names(scraped.text)
            stages |= {
                dict(labels)["stage"]
                for labels in scraped.series("livedash_update_latency_seconds_bucket")
            }
        await asyncio.sleep(POLL_SECONDS)  # polled: a gauge announces nothing when it appears
    missing = {name: sorted(sources) for name, sources in wanted.items() if name not in exported}
    assert missing == {}, f"named but not in /metrics: {missing}"
    # The latency alert and panels read both stages.
    assert {"commit_to_emit", "emit_to_write"} <= stages, stages


def exported_names(text: str) -> set[str]:
    """Every series name a scrape declares, as PromQL names them (counters end in _total), and
    the names of its histograms."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("", "_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


# --- systemd ----------------------------------------------------------------------------------


def test_the_systemd_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for line in (
        "ExecStartPre=/opt/livedash/bin/livedash migrate",
        "ExecStart=/opt/livedash/bin/livedash serve",
        "EnvironmentFile=/etc/livedash/livedash.env",
        "StateDirectory=livedash",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ):
        assert line in text.splitlines(), line
    assert "User=livedash" in text.splitlines()

    # verify checks that the commands exist: point them at this environment's livedash.
    livedash = Path(sys.executable).with_name("livedash")
    assert livedash.exists()
    unit = tmp_path / "livedash.service"
    unit.write_text(text.replace("/opt/livedash/bin/livedash", str(livedash)))
    verified = run(tool("systemd-analyze"), "verify", unit)
    complaints = (verified.stdout + verified.stderr).strip()
    assert verified.returncode == 0, complaints
    assert not complaints
    rated = succeeded(run(tool("systemd-analyze"), "security", "--offline=yes", unit))
    exposure = re.search(r"Overall exposure level for livedash\.service: ([\d.]+) (\w+)", rated)
    assert exposure is not None, rated
    assert float(exposure.group(1)) < 2.0, exposure.group(0)


def test_systemd_analyze_refuses_a_broken_copy_of_the_unit(tmp_path: Path) -> None:
    # So that a clean verify above means something: a misspelt directive is reported.
    livedash = Path(sys.executable).with_name("livedash")
    unit = tmp_path / "livedash.service"
    text = UNIT.read_text().replace("/opt/livedash/bin/livedash", str(livedash))
    unit.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    verified = run(tool("systemd-analyze"), "verify", unit)
    assert "Unknown key 'ProtectSystm'" in verified.stdout + verified.stderr


SITECUSTOMIZE = '''
"""Every process started with this directory on PYTHONPATH: no writable and executable memory,
as systemd's MemoryDenyWriteExecute=yes (Linux's PR_SET_MDWE: refused, then inherited)."""
import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    raise SystemExit("writable and executable memory is still allowed")
'''


async def test_livedash_serves_and_renders_pdfs_without_writable_executable_memory(
    hospital: dict[str, int],
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
    tmp_path: Path,
) -> None:
    # The unit's MemoryDenyWriteExecute=yes: CPython has no JIT, and neither do livedash's
    # native dependencies (uvicorn's, asyncpg's, reportlab's, cryptography's), so the service
    # works under it. The kernel's own switch stands in for systemd's filter.
    restricted = tmp_path / "restricted"
    restricted.mkdir()
    (restricted / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(restricted), os.environ.get("PYTHONPATH")]))
    instance = await Instance(
        settings, tmp_path / "instance.log", token(), env={"PYTHONPATH": path}
    ).start()
    try:
        screen = await connect(instance, token())
        await screen.call("subscribe_metrics", {"metrics": ["patients_total"]})
        await register_patient(writer, hospital["ED"], "under MemoryDenyWriteExecute")
        await screen.next("dashboard_update", update_of("patients_total", "ED", 2))
        async with httpx.AsyncClient(base_url=instance.url) as http:
            headers = bearer(token())
            queued = await http.post(
                "/api/reports",
                headers=headers,
                json={"type": "occupancy", "period": "yesterday", "format": "pdf"},
            )
            assert queued.status_code == 202, queued.text
            report = await finished(http, queued.headers["location"], headers)
            assert report["status"] == "done", report["error"]
            document = await http.get(f"{queued.headers['location']}/download", headers=headers)
        assert document.content.startswith(b"%PDF")
    finally:
        await instance.stop()
    assert instance.process is not None
    assert instance.process.returncode == 0


# --- Docker -----------------------------------------------------------------------------------


def test_the_dockerfiles_lint_clean_and_keep_their_promises() -> None:
    succeeded(run(tool("hadolint"), DOCKERFILE, DEPLOY / "postgres" / "Dockerfile"))

    instructions = dockerfile_instructions(DOCKERFILE)
    stages: list[list[tuple[str, str]]] = []
    for name, arguments in instructions:
        if name == "FROM":
            stages.append([])
        stages[-1].append((name, arguments))
    assert len(stages) >= 3, "a Node stage, a build stage and the final image"
    for stage in stages:
        image = stage[0][1].split()[0]
        tag = image.partition(":")[2]
        assert tag not in {"", "latest"}, f"{image}: pin the base image's version"
    assets, final = stages[0], stages[-1]
    assert assets[0][1].startswith("node:")
    assert any("npm ci --ignore-scripts" in arguments for _, arguments in assets)

    # The assets stage copies what the Makefile's vendor targets copy, nothing more or less.
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    vendor = re.search(r"^VENDOR := (.*)$", makefile, re.MULTILINE)
    assert vendor is not None
    wanted = {Path(path).name for path in vendor.group(1).split()}
    copied = {
        Path(word).name
        for name, arguments in assets
        if name == "RUN"
        for word in shlex.split(arguments)
        if word.startswith("node_modules/")
    }
    assert copied == wanted

    final_image = final[0][1].split()[0]
    assert re.fullmatch(r"python:[\d.]+-slim-\w+", final_image), final_image
    run_lines = " ".join(arguments for name, arguments in final if name == "RUN")
    assert not re.search(r"apt-get|gcc|build-essential|pip install", run_lines), run_lines
    user = [arguments for name, arguments in final if name == "USER"]
    assert user, "the image runs as root"
    assert user[-1].split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", "8000") in final
    command = json.loads(dict(final)["CMD"])
    assert command == ["livedash", "serve", "--host", "0.0.0.0"]
    assert "/health/live" in dict(final)["HEALTHCHECK"]


def image_health_check() -> list[str]:
    """The final image's HEALTHCHECK command (exec form)."""
    final = dockerfile_instructions(DOCKERFILE)
    check = [arguments for name, arguments in final if name == "HEALTHCHECK"][-1]
    command: list[str] = json.loads(check[check.index("CMD") + len("CMD") :].strip())
    return command


async def test_the_images_health_check_tells_a_live_instance_from_a_dead_one(
    server: LiveServer,
) -> None:
    command = image_health_check()
    assert command[0] == "python"
    command[0] = sys.executable  # the image's PATH starts with its environment's python

    async def check(port: int) -> int:
        environment = {**os.environ, "LIVEDASH_PORT": str(port)}
        environment.pop("LIVEDASH_TLS_CERTFILE", None)
        process = await asyncio.create_subprocess_exec(
            *command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await process.wait()

    assert await check(server.port) == 0
    assert await check(free_port()) != 0


def test_the_build_context_leaves_secrets_and_local_state_out(tmp_path: Path) -> None:
    # docker-py's reading of .dockerignore, which docker-compose 1.x sends builds with.
    checkout = tmp_path / "checkout"
    files = [
        "pyproject.toml", "README.md", "package.json", "package-lock.json",
        "src/livedash/__init__.py", "src/livedash/web/static/js/app.js",
        "src/livedash/web/static/vendor/socket.io.min.js", "src/livedash/__pycache__/x.pyc",
        "src/livedash.egg-info/PKG-INFO", ".livedash/jwt-secret", ".livedash/livedash.db",
        "deploy/livedash.env", "deploy/postgres.env", ".env", ".venv/bin/python",
        "node_modules/uplot/dist/uPlot.min.css", ".git/config", "tests/test_deploy.py",
    ]  # fmt: skip
    for name in files:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("x")
    shutil.copy(ROOT / ".dockerignore", checkout / ".dockerignore")
    interpreter = Path(tool("docker-compose")).read_text().splitlines()[0].removeprefix("#!")
    listing = succeeded(
        run(
            *shlex.split(interpreter),
            "-c",
            "import json, sys; from docker.utils.build import exclude_paths; "
            "root = sys.argv[1]; patterns = open(root + '/.dockerignore').read().splitlines(); "
            "print(json.dumps(sorted(exclude_paths(root, patterns))))",
            checkout,
        )
    )
    sent = {name for name in json.loads(listing) if (checkout / name).is_file()}
    assert sent == {
        ".dockerignore", "pyproject.toml", "README.md", "package.json", "package-lock.json",
        "src/livedash/__init__.py", "src/livedash/web/static/js/app.js",
    }  # fmt: skip
    # Everything the Dockerfile copies from the context is sent.
    for name, arguments in dockerfile_instructions(DOCKERFILE):
        if name == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert any(path == source or path.startswith(source.rstrip("/") + "/")
                           for path in sent), source  # fmt: skip


def resolved_compose(tmp_path: Path) -> dict[str, Any]:
    """`docker-compose config` of deploy/ with the example env files in place.

    docker-compose 1.x predates the top-level `name:`, so it reads a copy without that line;
    every other file is the checkout's own (symbolic links), as Compose would mount it.
    """
    project = tmp_path / "deploy"
    project.mkdir()
    for entry in DEPLOY.iterdir():
        if entry.name != COMPOSE.name:
            (project / entry.name).symlink_to(entry)
    text = COMPOSE.read_text()
    assert "\nname: livedash\n" in text
    (project / COMPOSE.name).write_text(text.replace("\nname: livedash\n", "\n"))
    shutil.copy(DEPLOY / "livedash.env.example", project / "livedash.env")
    shutil.copy(DEPLOY / "postgres.env.example", project / "postgres.env")
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = run(
        tool("docker-compose"), "-f", project / COMPOSE.name, "config", cwd=project, env=clean
    )
    succeeded(done)
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_compose_runs_two_instances_after_a_migration_behind_the_tests_nginx_conf(
    tmp_path: Path,
) -> None:
    config = resolved_compose(tmp_path)
    services = config["services"]
    assert compose_file()["name"] == "livedash"
    instances = sorted(name for name in services if name.startswith("livedash-"))
    assert instances == ["livedash-1", "livedash-2"]
    subnet = config["networks"]["livedash"]["ipam"]["config"][0]["subnet"]
    for name in [*instances, "migrate"]:
        service = services[name]
        assert service["image"] == "livedash:local"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        environment = service["environment"]
        assert environment["LIVEDASH_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in environment["LIVEDASH_DATABASE_URL"]
        assert environment["LIVEDASH_REDIS_URL"].startswith("redis://redis:")
        assert environment["LIVEDASH_JWT_SECRET"]
        assert environment["LIVEDASH_FORWARDED_ALLOW_IPS"] == subnet
        assert "ports" not in service, f"{name} must be reached through nginx only"
    for name in instances:
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "healthcheck" not in services[name]  # the image's own, on /health/live
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["command"][-1] == "livedash migrate && livedash doctor"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    postgres = services["postgres"]
    assert "wal_level=logical" in postgres["command"]
    assert Path(postgres["build"]["context"]).resolve() == DEPLOY / "postgres"
    for name in ("postgres", "redis", "nginx"):
        assert services[name]["healthcheck"]["test"], name

    # nginx: the tests' own deploy/nginx.conf, rendered by the script, in front of both.
    nginx = services["nginx"]
    mounts = {
        target: Path(source).resolve()
        for source, target, *_ in (volume.split(":") for volume in nginx["volumes"])
    }
    assert mounts["/etc/livedash/nginx.conf"] == NGINX_CONFIG.resolve()
    assert mounts["/etc/livedash/render-site.sh"] == RENDER_SITE
    assert "/etc/livedash/render-site.sh /etc/livedash/nginx.conf" in nginx["command"][-1]
    upstreams = nginx["environment"]["NGINX_UPSTREAMS"].split()
    assert upstreams == [f"{name}:8000" for name in instances]
    assert nginx["ports"][0]["target"] == int(nginx["environment"]["NGINX_LISTEN"])

    # Prometheus scrapes the same instances, and reads the rules.
    scraping = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = scraping["scrape_configs"]
    assert job["job_name"] == "livedash"
    assert job["static_configs"][0]["targets"] == upstreams
    assert scraping["rule_files"] == [RULES.name]


def test_compose_refuses_to_start_without_its_env_files(tmp_path: Path) -> None:
    project = tmp_path / "deploy"
    project.mkdir()
    (project / COMPOSE.name).write_text(COMPOSE.read_text().replace("\nname: livedash\n", "\n"))
    done = run(tool("docker-compose"), "-f", project / COMPOSE.name, "config", cwd=project)
    assert done.returncode != 0
    assert "livedash.env" in done.stdout + done.stderr


def render_site(output: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """deploy/nginx/render-site.sh, as the Compose nginx runs it, with `environment`."""
    return run(
        "sh", RENDER_SITE, NGINX_CONFIG, output, env={"PATH": os.environ["PATH"], **environment}
    )


async def test_compose_nginx_is_the_tests_nginx_conf_and_proxies_an_instance(
    server: LiveServer, connect: Connect, token: Any, tmp_path: Path
) -> None:
    plain = NginxServer(tmp_path / "plain", [server.port])
    site = {
        "NGINX_UPSTREAMS": f"127.0.0.1:{server.port}",
        "NGINX_LISTEN": f"127.0.0.1:{plain.port}",
        "NGINX_STATE_DIR": str(plain.root),
        "NGINX_ERROR_LOG": str(plain.log),
    }
    rendered = tmp_path / "nginx.conf"
    succeeded(render_site(rendered, **site))
    # Line for line what the tests run: only the "site:" lines differ from deploy/nginx.conf.
    assert rendered.read_text() == render_nginx_config(plain.root, plain.port, [server.port])

    compose_text = rendered.read_text()
    plain.changes = [lambda _: compose_text]
    try:
        await asyncio.to_thread(plain.start)
        async with httpx.AsyncClient(base_url=plain.url) as http:
            assert (await http.get("/health/live")).status_code == 200
            assert (await http.get("/metrics")).status_code == 403  # scraped directly only
        screen = await connect(plain, token())  # the WebSocket upgrade, through nginx
        await screen.call("subscribe_metrics", {"metrics": ["patients_total"]})
        await screen.client.disconnect()  # first: nginx waits for open connections to quit
    finally:
        await asyncio.to_thread(plain.stop)

    # TLS at nginx, as docker-compose.yml's NGINX_TLS_CERT and NGINX_TLS_KEY ask for it.
    secure = NginxServer(tmp_path / "tls", [server.port])
    secure.root.mkdir()
    cert, key = write_self_signed(secure.root)
    succeeded(
        render_site(
            rendered,
            NGINX_UPSTREAMS=site["NGINX_UPSTREAMS"],
            NGINX_LISTEN=f"127.0.0.1:{secure.port}",
            NGINX_STATE_DIR=str(secure.root),
            NGINX_ERROR_LOG=str(secure.log),
            NGINX_TLS_CERT=str(cert),
            NGINX_TLS_KEY=str(key),
        )
    )
    tls_text = rendered.read_text()
    assert f"listen 127.0.0.1:{secure.port} ssl;" in tls_text
    secure.changes = [lambda _: tls_text]
    try:
        await asyncio.to_thread(secure.start)
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cert)) as http:
            answer = await http.get(f"https://127.0.0.1:{secure.port}/health/live")
        assert answer.status_code == 200
    finally:
        await asyncio.to_thread(secure.stop)


def _directive(config: str, name: str) -> int:
    found = re.search(rf"^\s*{name}\s+(\d+);", config, re.MULTILINE)
    assert found is not None, name
    return int(found.group(1))


def test_one_nginx_worker_can_hold_an_instances_every_socket() -> None:
    # The kernel does not spread connections evenly over nginx's workers, and each proxied
    # socket holds two descriptors: with 8192, a 2-core host refused the 7,675th of 10,000
    # screens long before livedash's own cap (bench/latency.py --clients 10000).
    config = NGINX_CONFIG.read_text()
    connections = _directive(config, "worker_connections")
    assert connections >= 2 * Settings().max_connections
    assert _directive(config, "worker_rlimit_nofile") >= 2 * connections


def test_the_nginx_render_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    output = tmp_path / "nginx.conf"
    missing = render_site(output)
    assert missing.returncode != 0
    assert "NGINX_UPSTREAMS" in missing.stderr
    half = render_site(output, NGINX_UPSTREAMS="a:8000", NGINX_TLS_CERT="/cert.pem")
    assert half.returncode == 2
    assert "NGINX_TLS_KEY" in half.stderr
    # A "site:" line it does not know (nginx.conf gained one) is refused, as by the tests.
    template = tmp_path / "template.conf"
    template.write_text(NGINX_CONFIG.read_text() + "resolver 10.0.0.2;  # site: resolver\n")
    unknown = run(
        "sh", RENDER_SITE, template, output,
        env={"PATH": os.environ["PATH"], "NGINX_UPSTREAMS": "a:8000"},
    )  # fmt: skip
    assert unknown.returncode != 0
    assert "unknown site line" in unknown.stderr
    assert not output.exists()
    assert not output.with_name("nginx.conf.tmp").exists()
    with pytest.raises(ValueError, match="unknown site line"):
        render_nginx_config(tmp_path, 1, [2], config=template)


async def test_the_bundled_postgres_set_up_passes_livedash_doctor(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The Compose postgres service's own server options, its init script, and the migrate
    # service's command, against a real PostgreSQL and Redis.
    command = compose_file()["services"]["postgres"]["command"]
    options = dict(
        value.split("=", 1) for flag, value in itertools.pairwise(command) if flag == "-c"
    )
    assert options["wal_level"] == "logical"
    server = PostgresServer(new_root("livedash-compose-pg-"), **options).init()
    await asyncio.to_thread(server.start)
    try:
        passwords = env_file(DEPLOY / "postgres.env.example")
        succeeded(
            run(
                "sh", DEPLOY / "postgres" / "initdb" / "10-livedash.sh",
                env={
                    "PATH": f"{postgres_bindir()}{os.pathsep}{os.environ['PATH']}",
                    "PGHOST": "127.0.0.1", "PGPORT": str(server.port),
                    "POSTGRES_USER": "postgres", **passwords,
                },
            )
        )  # fmt: skip
        settings = env_file(DEPLOY / "livedash.env.example")
        url = settings["LIVEDASH_DATABASE_URL"].replace(
            "@postgres:5432/", f"@127.0.0.1:{server.port}/"
        )
        assert url.split("://", 1)[1].startswith(
            f"livedash:{passwords['POSTGRES_LIVEDASH_PASSWORD']}@"
        )
        migrate = compose_file()["services"]["migrate"]["command"]
        done = await asyncio.to_thread(
            run,
            *migrate,
            cwd=tmp_path,
            env={
                **os.environ,
                **settings,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "LIVEDASH_DATABASE_URL": url,
                "LIVEDASH_REDIS_URL": redis_server.url,
            },
        )
        output = succeeded(done)
        assert re.search(r"All \d+ checks passed", output), output
        role = succeeded(
            run(
                postgres_bindir() / "psql", "-h", "127.0.0.1", "-p", str(server.port),
                "-U", "postgres", "-At", "-c",
                "SELECT rolsuper, rolreplication, "
                "(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'hospital') "
                "FROM pg_roles WHERE rolname = 'livedash'",
            )
        )  # fmt: skip
        assert role.strip() == "f|t|livedash"
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(server.root, ignore_errors=True)


# --- Settings named in the kit and the guides ------------------------------------------------


def test_the_env_examples_set_only_real_settings_to_valid_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = env_file(DEPLOY / "livedash.env.example", commented=True)
    unknown = [
        key
        for key in example
        if key.startswith("LIVEDASH_")
        and key.removeprefix("LIVEDASH_").lower() not in Settings.model_fields
    ]
    assert unknown == []
    assert not [key for key in example if not key.startswith("LIVEDASH_")]
    for key in list(os.environ):
        if key.startswith("LIVEDASH_"):
            monkeypatch.delenv(key)
    for key, value in example.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.report_storage == "database"
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.jwt_secret is not None


def test_the_kit_and_the_guides_name_only_real_settings() -> None:
    named: dict[str, set[str]] = {}
    sources = [
        *(path for path in DEPLOY.rglob("*") if path.is_file()),
        ROOT / ".dockerignore",
        TROUBLESHOOTING,
        ROOT / "docs" / "deploy.md",
    ]
    for path in sources:
        for name in SETTING_NAME.findall(path.read_text()):
            named.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert "LIVEDASH_DATABASE_URL" in named
    commands = command_variables()
    assert "LIVEDASH_STATUS_TOKEN" in commands  # the walk finds the commands' own variables
    unknown = {
        name: sorted(found)
        for name, found in named.items()
        if name.removeprefix("LIVEDASH_").lower() not in Settings.model_fields
        and name not in commands
    }
    assert unknown == {}


def command_variables() -> set[str]:
    """The environment variables the CLI's commands read for their own options."""
    import typer.main

    from livedash.cli import app

    found: set[str] = set()

    # Typer's commands are click's, or its own copy of click's: read them by their attributes.
    def walk(command: Any) -> None:
        for parameter in command.params:
            names = parameter.envvar
            found.update([names] if isinstance(names, str) else names or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def test_compose_publishes_only_nginx_and_a_local_prometheus() -> None:
    published = {
        name: service.get("ports", [])
        for name, service in compose_file()["services"].items()
        if service.get("ports")
    }
    assert published == {
        "nginx": ["${HTTP_PORT:-8080}:8080"],
        "prometheus": ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"],
    }
