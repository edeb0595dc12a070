"""API keys: names, listing without the secret, revoking, when each was last used, and the key
``genq serve`` keeps across restarts."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.serve import key_file, serve_key
from genq.auth import create_key, hash_key, list_keys, revoke_key, tenant_of
from genq.cli import app
from genq.errors import InvalidRequest, NotFound, Unauthorized
from genq.settings import get_settings
from genq.store import make_engine, session_factory, upgrade
from tests.api.conftest import Service


def test_keys_are_listed_without_their_secret_and_revoked_by_id(
    make_service: Callable[..., Service],
) -> None:
    service = make_service()
    with service.context.sessions.begin() as session:
        ci = create_key(session, tenant="a", name="ci")
        with pytest.raises(InvalidRequest):
            create_key(session, tenant="a", name="tab\there")
    with service.context.sessions.begin() as session:
        keys = list_keys(session)
        mine = list_keys(session, tenant="a")
    assert [k.tenant for k in keys] == ["a", "b", "a"]  # by creation
    assert [k.name for k in mine] == [None, "ci"]
    assert all(service.keys["a"] not in repr(k) and ci not in repr(k) for k in keys)
    assert mine[1].prefix == ci[:10] and len(ci) > 40
    with service.context.sessions.begin() as session:
        assert revoke_key(session, mine[1].id) is True
        assert revoke_key(session, mine[1].id) is False
        with pytest.raises(NotFound):
            revoke_key(session, "key_nope")
    with service.context.sessions.begin() as session:
        assert [k.name for k in list_keys(session, tenant="a")] == [None]
        listed = list_keys(session, tenant="a", revoked=True)
        assert listed[1].revoked_at is not None
        with pytest.raises(Unauthorized):
            tenant_of(session, key_hash=hash_key(ci))


def test_a_revoked_key_is_refused_and_use_is_written_down(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(key_cache_seconds=0)
    with service.context.sessions.begin() as session:
        spare = create_key(session, tenant="a", name="spare")
    headers = {"Authorization": f"Bearer {spare}"}
    with TestClient(create_app(service.context)) as client:  # runs the app's lifespan
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        assert client.get("/v1/jobs", headers=service.as_("b")).status_code == 200
    # at shutdown the process wrote when its keys were used: those two, not tenant a's first
    with service.context.sessions.begin() as session:
        used = {k.name or k.tenant: k.last_used_at for k in list_keys(session)}
        assert used["spare"] is not None and used["b"] is not None and used["a"] is None
        revoke_key(session, next(k.id for k in list_keys(session) if k.name == "spare"))
    assert service.client.get("/v1/jobs", headers=headers).status_code == 401
    assert service.client.get("/v1/jobs", headers=service.as_("a")).status_code == 200


def test_genq_serve_keeps_its_key_until_it_is_revoked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'genq.db'}"
    (tmp_path / "data").mkdir()
    upgrade(url)
    sessions = session_factory(make_engine(url))
    path = key_file(url)
    assert path == tmp_path / "data" / "genq.db.serve-key"
    assert key_file("sqlite://") is None
    with sessions.begin() as session:
        first = serve_key(session, tenant="default", path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sessions.begin() as session:
        assert serve_key(session, tenant="default", path=path) == first  # a restart
        other = serve_key(session, tenant="acme", path=path)  # another tenant: a new key
        assert other != first
    with sessions.begin() as session:
        (served,) = [k for k in list_keys(session, tenant="acme")]
        assert served.name == "genq serve"
        revoke_key(session, served.id)
    with sessions.begin() as session:
        again = serve_key(session, tenant="acme", path=path)
    assert again != other and path.read_text().strip() == again


def test_the_keys_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("GENQ_DATABASE_URL", url)
    get_settings.cache_clear()
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "ci"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and key not in listed.stdout
    (row,) = listed.stdout.splitlines()[1:]
    key_id, tenant, name, starts = row.split()[:4]
    assert (tenant, name, starts) == ("acme", "ci", key[:10] + "…")
    assert runner.invoke(app, ["keys", "revoke", key_id]).stdout.strip() == f"revoked {key_id}"
    again = runner.invoke(app, ["keys", "revoke", key_id])
    assert again.stdout.strip() == f"{key_id} was revoked already"
    assert runner.invoke(app, ["keys", "list"]).stdout.splitlines()[1:] == []
    assert key_id in runner.invoke(app, ["keys", "list", "--revoked"]).stdout
    missing = runner.invoke(app, ["keys", "revoke", "key_nope"])
    assert missing.exit_code == 2 and "no API key" in missing.output
    bad = runner.invoke(app, ["keys", "create", "--tenant", "a b"])
    assert bad.exit_code == 2 and "tenant" in bad.output
    get_settings.cache_clear()
