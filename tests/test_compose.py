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
