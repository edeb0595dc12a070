from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from genq.store.db import alembic_config, downgrade, make_engine, upgrade
from genq.store.tables import Base

TABLES = {"jobs", "requests", "results", "batches"}
TABLES |= {"api_keys", "files", "openai_batches", "worker_heartbeats", "tenants", "pruned_totals"}
TABLES |= {"file_parts", "job_batches", "webhook_deliveries"}


def test_one_head(sqlite_url: Callable[[], str]) -> None:
    script = ScriptDirectory.from_config(alembic_config(sqlite_url()))
    assert script.get_heads() == ["0013"]


def test_upgrade_from_empty_matches_the_models(db_url: Callable[[], str]) -> None:
    url = db_url()
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert context.get_current_revision() == "0013"
            assert set(inspect(conn).get_table_names()) == TABLES | {"alembic_version"}
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_empty_and_back(db_url: Callable[[], str]) -> None:
    url = db_url()
    upgrade(url)
    downgrade(url, revision="base")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
        upgrade(url)
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= TABLES
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("values", "broken"),
    [
        ("'req_1', 'job_1', 0, 'm', 'g', 'p', '[]', '{}', 'queued'", "prompt_xor_messages"),
        ("'req_1', 'job_1', 0, 'm', 'g', 'p', NULL, '{}', 'lost'", "request_status"),
        ("'req_1', 'job_x', 0, 'm', 'g', 'p', NULL, '{}', 'queued'", "foreign key"),
    ],
)
def test_the_schema_refuses_bad_rows(db_url: Callable[[], str], values: str, broken: str) -> None:
    url = db_url()
    upgrade(url)
    engine = make_engine(url)
    job = (
        "INSERT INTO jobs (id, tenant, model, params, status, total, succeeded, failed, cancelled,"
        " prompt_tokens, completion_tokens, created_at)"
        " VALUES ('job_1', 'default', 'm', '{}', 'queued', 1, 0, 0, 0, 0, 0, '2030-01-01')"
    )
    request = (
        "INSERT INTO requests (id, job_id, idx, model, group_key, prompt, messages, params, status,"
        f" attempts, fence, created_at, updated_at) VALUES ({values}, 0, 0, '2030-01-01',"
        " '2030-01-01')"
    )
    try:
        with engine.begin() as conn:
            conn.execute(text(job))
        with pytest.raises(IntegrityError, match=f"(?i){broken}"), engine.begin() as conn:
            conn.execute(text(request))
    finally:
        engine.dispose()


def test_files_move_into_parts_and_back(db_url: Callable[[], str]) -> None:
    url = db_url()
    upgrade(url, revision="0008")
    engine = make_engine(url)
    content = b'{"prompt": "a"}\n' * 1000
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO files (id, tenant, purpose, filename, bytes, content,"
                    " created_at) VALUES ('file_1', 't', 'batch', 'in.jsonl', :n, :c,"
                    " '2030-01-01')"
                ),
                {"n": len(content), "c": content},
            )
        upgrade(url)
        with engine.connect() as conn:
            parts = conn.execute(text("SELECT seq, data FROM file_parts")).all()
            assert [(seq, bytes(data)) for seq, data in parts] == [(0, content)]
        downgrade(url, revision="0008")
        with engine.connect() as conn:
            assert bytes(conn.scalar(text("SELECT content FROM files"))) == content
    finally:
        engine.dispose()
