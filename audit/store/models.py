"""Typed SQLAlchemy 2.0 models of the audit store.

Every schema change needs an Alembic migration in ``alembic/versions``; the store applies them on open.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class PromptSet(Base):
    """A named collection of prompts, imported from one or more files."""

    __tablename__ = "prompt_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    prompts: Mapped[list[Prompt]] = relationship(back_populates="prompt_set")


class Prompt(Base):
    """One prompt of a set; ``reference_*`` hold a response and label that came with the import."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("set_id", "content_hash", name="uq_prompt_set_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("prompt_sets.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    source: Mapped[str | None] = mapped_column(String(500))
    content_hash: Mapped[str] = mapped_column(String(64))
    reference_response: Mapped[str | None] = mapped_column(Text)
    reference_label: Mapped[bool | None] = mapped_column(Boolean)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    prompt_set: Mapped[PromptSet] = relationship(back_populates="prompts")


class Target(Base):
    """A chat model behind an API. The API key is never stored: only the name of its env variable."""

    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(50))
    base_url: Mapped[str | None] = mapped_column(String(1000))
    model: Mapped[str | None] = mapped_column(String(200))
    api_key_env: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    refusal_tokens: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    """One collection of responses of a target to a prompt set."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("prompt_sets.id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    prompt_set: Mapped[PromptSet] = relationship()
    target: Mapped[Target] = relationship()


class Task(Base):
    """A unit of work of a run, (prompt, sample), claimed by a worker under a lease."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("run_id", "prompt_id", "sample", name="uq_task_key"),
        Index("ix_tasks_claim", "run_id", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    sample: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|claimed|done
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Response(Base):
    """A target's answer to one (prompt, sample) of a run; exactly one per key."""

    __tablename__ = "responses"
    __table_args__ = (UniqueConstraint("run_id", "prompt_id", "sample", name="uq_response_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    sample: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(50))
    #: The provider's own refusal signal (``message.refusal``, ``content_filter``, a 400 policy
    #: error), kept apart from the text and never mixed into text labels.
    provider_refusal: Mapped[str | None] = mapped_column(String(50))
    provider_refusal_detail: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    logprobs: Mapped[list[Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    request_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    prompt: Mapped[Prompt] = relationship()
    run: Mapped[Run] = relationship()


class Label(Base):
    """A refusal label of a response, by a classifier (``machine``) or a reviewer (``human``).

    Human labels override machine labels in every rate; the newest human label wins.
    """

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_response_source", "response_id", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"))
    classifier: Mapped[str] = mapped_column(String(200))
    classifier_version: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(10), default="machine")  # machine | human
    refusal: Mapped[bool] = mapped_column(Boolean)
    kind: Mapped[str] = mapped_column(String(20))
    p_refusal: Mapped[float] = mapped_column(Float)
    refusal_start: Mapped[int | None] = mapped_column(Integer)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    review_reason: Mapped[str | None] = mapped_column(String(200))
    reviewer: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.current_timestamp()
    )

    response: Mapped[Response] = relationship()


class PromptPrediction(Base):
    """A prompt classifier's forecast of refusal for one prompt, before or without any query."""

    __tablename__ = "prompt_predictions"
    __table_args__ = (Index("ix_prompt_predictions_prompt", "prompt_id", "model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(100))
    p_refusal: Mapped[float] = mapped_column(Float)
    category_probs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRun(Base):
    """One execution of a batch audit job for one date; re-running finishes the same row."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job_name", "run_date", name="uq_job_run_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_name: Mapped[str] = mapped_column(String(200))
    run_date: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), default="running")
    run_names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


# -- dashboard (owner: dashboard area) ------------------------------------------------------------


class DashRollup(Base):
    """Dashboard aggregate per run × category, kept up to date incrementally by ``audit.dashboard``.

    ``n``/``k``/``human``: labelled responses, refusals and human-labelled responses (effective
    labels); ``responses``/``provider``/``errors``: all responses, provider refusal signals, errors.
    """

    __tablename__ = "dash_rollup"

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    k: Mapped[int] = mapped_column(Integer, default=0)
    human: Mapped[int] = mapped_column(Integer, default=0)
    responses: Mapped[int] = mapped_column(Integer, default=0)
    provider: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)


class DashRollupState(Base):
    """The watermarks up to which :class:`DashRollup` counts rows (a single row, ``id = 1``)."""

    __tablename__ = "dash_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_max_id: Mapped[int] = mapped_column(Integer, default=0)
    response_count: Mapped[int] = mapped_column(Integer, default=0)
    label_max_id: Mapped[int] = mapped_column(Integer, default=0)
    label_count: Mapped[int] = mapped_column(Integer, default=0)
    prompt_max_id: Mapped[int] = mapped_column(Integer, default=0)
    built_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


#: Provider refusal signals per run, counted without scanning every response.
Index(
    "ix_responses_provider_signal",
    Response.run_id,
    Response.provider_refusal,
    sqlite_where=Response.provider_refusal.is_not(None),
    postgresql_where=Response.provider_refusal.is_not(None),
)
