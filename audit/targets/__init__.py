"""Targets: the chat models an audit queries. A registry of providers, and stored target configs.

Providers: ``openai`` (chat completions), ``anthropic`` (Messages), ``http`` (generic template).
Built-in loopback servers (Starlette apps): :mod:`audit.targets.replay`, :mod:`audit.targets.faults`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from audit.targets.base import (
    BadResponse,
    ChatRequest,
    ChatTarget,
    ClientError,
    Completion,
    ConfigError,
    ConnectionFailed,
    RateLimited,
    ServerError,
    TargetError,
    TargetTimeout,
)

PROVIDERS = ("openai", "anthropic", "http")


def provider_class(provider: str):
    if provider == "openai":
        from audit.targets.openai import OpenAITarget

        return OpenAITarget
    if provider == "anthropic":
        from audit.targets.anthropic import AnthropicTarget

        return AnthropicTarget
    if provider == "http":
        from audit.targets.http import GenericHttpTarget

        return GenericHttpTarget
    raise ConfigError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")


def _looks_secret(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(w in k for w in ("api_key", "apikey", "secret", "password", "token")) and k not in (
        "max_tokens",
        "top_logprobs",
        "max_completion_tokens",
    )


def add_target(
    store,
    name: str,
    provider: str,
    base_url: str | None,
    model: str | None,
    api_key_env: str | None = None,
    params: dict[str, Any] | None = None,
    refusal_tokens: dict[str, Any] | None = None,
    *,
    replace: bool = False,
):
    """Store a target configuration (never an API key: only the name of its env variable).

    Raises ValueError if ``name`` exists (unless ``replace``) or a param looks like a literal secret.
    """
    from audit.store import Target

    provider_class(provider)  # validates the provider
    params = dict(params or {})
    for k, v in params.items():
        if _looks_secret(k) and isinstance(v, str) and "${" not in v:
            raise ValueError(
                f"param {k!r} looks like a secret: pass keys only through environment variables "
                f"(--api-key-env VAR, or a header value like '${{VAR}}')"
            )
    if base_url:
        from urllib.parse import parse_qsl, urlsplit

        for qk, qv in parse_qsl(urlsplit(base_url).query):
            if (_looks_secret(qk) or qk.lower() == "key") and "${" not in qv:
                raise ValueError(f"URL parameter {qk!r} looks like a secret: write it as '${{ENV_VAR}}'")
    for hk, hv in (params.get("headers") or {}).items():
        if hk.lower() in ("authorization", "x-api-key", "api-key") and "${" not in str(hv):
            raise ValueError(f"header {hk!r} must name an environment variable, e.g. '${{MY_KEY}}'")
    with store.session() as session:
        row = session.scalar(select(Target).where(Target.name == name))
        if row is not None and not replace:
            raise ValueError(f"target {name!r} already exists")
        if row is None:
            row = Target(name=name)
            session.add(row)
        row.provider = provider
        row.base_url = base_url
        row.model = model
        row.api_key_env = api_key_env
        row.params = params
        row.refusal_tokens = refusal_tokens
        session.flush()
        session.expunge(row)
    return row


def list_targets(store) -> list:
    from audit.store import Target

    with store.session() as session:
        rows = list(session.scalars(select(Target).order_by(Target.name)))
        for r in rows:
            session.expunge(r)
    return rows


def get_target(store, name: str):
    from audit.store import Target

    with store.session() as session:
        row = session.scalar(select(Target).where(Target.name == name))
        if row is None:
            raise ValueError(f"no target named {name!r} (see `refusal-audit target list`)")
        session.expunge(row)
    return row


def make_target(row, *, timeout: float = 60.0, transport=None, max_connections: int = 64) -> ChatTarget:
    """A live client for a stored target row (reads its API key from the environment now)."""
    cls = provider_class(row.provider)
    return cls(
        row.name,
        row.base_url,
        row.model,
        api_key_env=row.api_key_env,
        params=dict(row.params or {}),
        timeout=timeout,
        transport=transport,
        max_connections=max_connections,
    )


__all__ = [
    "PROVIDERS",
    "BadResponse",
    "ChatRequest",
    "ChatTarget",
    "ClientError",
    "Completion",
    "ConfigError",
    "ConnectionFailed",
    "RateLimited",
    "ServerError",
    "TargetError",
    "TargetTimeout",
    "add_target",
    "get_target",
    "list_targets",
    "make_target",
    "provider_class",
]
