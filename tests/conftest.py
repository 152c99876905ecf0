"""Shared fixtures: a fresh SQLite store per test, and the PostgreSQL server that .ci/run starts."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def store(db_url):
    from audit.store import open_store

    s = open_store(db_url)
    yield s
    s.dispose()


@pytest.fixture
def pg_url() -> str:
    """A fresh database on the PostgreSQL server named by REFUSAL_AUDIT_TEST_PG (an admin URL)."""
    admin = os.environ.get("REFUSAL_AUDIT_TEST_PG")
    if not admin:
        pytest.skip("REFUSAL_AUDIT_TEST_PG is not set (.ci/run starts a throwaway PostgreSQL)")
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
