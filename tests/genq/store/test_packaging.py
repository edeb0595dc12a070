"""The wheel carries Alembic's environment and every revision, and genq installed from it finds
them and upgrades a database (``genq db upgrade`` in a docker image, say, has no checkout)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from genq.store.db import alembic_config

REPO = Path(__file__).resolve().parents[3]
BUILD_TIMEOUT_S = 300


def _not_sources(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(directory) == REPO:  # the venv, git, caches and build outputs
        skipped |= {n for n in names if n.startswith(".") or n in ("build", "dist", "out")}
    return skipped


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """genq's wheel, built from a copy of the sources (the build writes into its source tree)."""
    root = tmp_path_factory.mktemp("wheel")
    source, out = root / "src", root / "dist"
    shutil.copytree(REPO, source, ignore=_not_sources)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*command, "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("genq-*.whl")
    return path


def test_the_wheel_carries_the_environment_and_every_revision(wheel: Path) -> None:
    revisions = sorted(p.name for p in (REPO / "migrations" / "versions").glob("*.py"))
    assert "0001_initial.py" in revisions
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {"migrations/env.py", "migrations/script.py.mako"}
    expected |= {f"migrations/versions/{name}" for name in revisions}
    # The dashboard's templates and style ship too: it loads nothing from elsewhere.
    ui = REPO / "api" / "ui"
    assert len(list(ui.glob("templates/*.html"))) >= 4
    expected |= {str(p.relative_to(REPO)) for p in ui.glob("templates/*.html")}
    expected |= {str(p.relative_to(REPO)) for p in ui.glob("static/*")}
    assert expected - names == set()


def test_genq_installed_from_the_wheel_upgrades_with_its_own_migrations(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    database = tmp_path / "installed.db"
    url = f"sqlite:///{database}"
    script = (
        "import json, sys\n"
        "from genq.store import db\n"
        "db.upgrade(sys.argv[1])\n"
        "print(json.dumps({'module': db.__file__, 'migrations': str(db.MIGRATIONS_DIR)}))\n"
    )
    # The unpacked wheel comes first on the path, ahead of the checkout's editable install; the
    # working directory holds no genq either.
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script, url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert Path(found["module"]).is_relative_to(site)
    assert Path(found["migrations"]) == site.resolve() / "migrations"
    with sqlite3.connect(database) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
