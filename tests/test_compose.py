"""No Docker engine here: the compose file's structure, and every command it runs exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
import yaml

from genq.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cli_paths() -> set[tuple[str, ...]]:
    group = typer.main.get_command(app)
    paths: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        paths.add((name,))
        for sub in getattr(command, "commands", {}):
            paths.add((name, sub))
    return paths


def test_services_and_volumes(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "migrate", "api", "worker"}
    assert set(compose["volumes"]) >= {"redis-data", "postgres-data", "models"}
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    for name in ("redis", "postgres", "api"):
        assert services[name]["healthcheck"]["test"], name


def test_migrate_waits_for_the_database_and_the_rest_for_migrate(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_the_worker_scales_and_reserves_a_gpu(compose: dict) -> None:  # type: ignore[type-arg]
    worker = compose["services"]["worker"]
    # --scale needs no fixed name or host port.
    assert "container_name" not in worker and "ports" not in worker
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1


def test_every_genq_command_exists_in_the_cli(compose: dict) -> None:  # type: ignore[type-arg]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["genq"]' in dockerfile
    known = _cli_paths()
    built = [s for s in compose["services"].values() if "build" in s]
    assert len(built) == 3
    for service in built:
        words = [w for w in service["command"] if not w.startswith("-")]
        assert tuple(words[:2]) in known or tuple(words[:1]) in known, service["command"]
        assert service["environment"]["GENQ_DATABASE_URL"].startswith("postgresql+psycopg://")


def _compose_cli() -> list[str] | None:
    """``docker compose`` or ``docker-compose``, when one is installed."""
    import shutil
    import subprocess

    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        found = subprocess.run([*command, "version"], capture_output=True, check=False)
        if found.returncode == 0:
            return command
    return None


def test_genq_compose_gives_each_worker_its_own_gpu(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    out = tmp_path / "docker-compose.gpus.yml"
    base = ROOT / "docker-compose.yml"
    result = CliRunner().invoke(
        app, ["compose", "--gpu-ids", "0,2,3", "--base", str(base), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    made = yaml.safe_load(out.read_text())
    services = made["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    assert sorted(workers) == ["worker-0", "worker-1", "worker-2"]
    devices = []
    for worker in workers.values():
        [device] = worker["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device and device["capabilities"] == ["gpu"]
        devices += device["device_ids"]
    assert devices == ["0", "2", "3"]  # each a different device
    original = yaml.safe_load(base.read_text())["services"]
    for name in ("redis", "postgres", "migrate", "api"):
        assert services[name] == original[name]
    for worker in workers.values():
        assert worker["command"] == original["worker"]["command"]
    again = CliRunner().invoke(app, ["compose", "--gpu-ids", "1,1", "--base", str(base)])
    assert again.exit_code == 2 and "distinct" in again.output


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose here to validate with")
def test_the_per_gpu_file_passes_docker_compose_config(tmp_path: Path) -> None:
    import subprocess

    from typer.testing import CliRunner

    out = tmp_path / "docker-compose.gpus.yml"
    base = ROOT / "docker-compose.yml"
    result = CliRunner().invoke(
        app, ["compose", "--gpus", "2", "--base", str(base), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    cli = _compose_cli()
    assert cli is not None

    checked = subprocess.run(
        [*cli, "-f", str(out), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,  # the file builds "." : the repository
    )
    assert checked.returncode == 0, checked.stderr
