"""The audit store: typed models, engine and sessions from a URL, migrations applied on open."""

from audit.store.db import DEFAULT_URL, Store, open_store, resolve_url
from audit.store.models import (
    Base,
    JobRun,
    Label,
    Prompt,
    PromptPrediction,
    PromptSet,
    Response,
    Run,
    Target,
    Task,
)

__all__ = [
    "DEFAULT_URL",
    "Base",
    "JobRun",
    "Label",
    "Prompt",
    "PromptPrediction",
    "PromptSet",
    "Response",
    "Run",
    "Store",
    "Target",
    "Task",
    "open_store",
    "resolve_url",
]
