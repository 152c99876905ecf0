"""What every target shares: the request, the completion, the errors, and the httpx plumbing.

A target is anything with ``async complete(request) -> Completion``. Built-in providers speak HTTP
through one ``httpx.AsyncClient`` whose transport can be swapped (tests point it at real loopback
servers; the code path is the same as in production).

API keys come only from environment variables named in the target's configuration; they live in
request headers only and are redacted from every error message the collector records.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import os
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import certifi
import httpx

#: How many generated positions of logprobs are stored per response.
LOGPROB_POSITIONS = 20

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class ChatRequest:
    """One chat request: the messages and the sampling parameters of the run."""

    messages: list[dict[str, str]]
    temperature: float | None = None
    max_tokens: int | None = None
    logprobs: int | None = None  # top-K alternatives per position; None = no logprobs
    params: dict[str, Any] = field(default_factory=dict)  # extra provider parameters (top_p, seed, ...)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m.get("role") == "user")


@dataclass
class Completion:
    """What a target answered. ``provider_refusal`` is the provider's own signal, never the text."""

    text: str | None
    finish_reason: str | None = None
    provider_refusal: str | None = None  # message_refusal | content_filter | content_policy | refusal
    provider_refusal_detail: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: list[dict[str, Any]] | None = None
    latency_ms: float | None = None


class TargetError(Exception):
    """A failed request. ``retryable`` errors are retried with backoff; the last one is recorded."""

    retryable = False
    kind = "error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RateLimited(TargetError):
    retryable = True
    kind = "rate_limited"


class ServerError(TargetError):
    retryable = True
    kind = "server_error"


class TargetTimeout(TargetError):
    retryable = True
    kind = "timeout"


class ConnectionFailed(TargetError):
    retryable = True
    kind = "connection"


class BadResponse(TargetError):
    """Malformed JSON, no choices, no text where one was expected: transient on flaky servers."""

    retryable = True
    kind = "bad_response"


class ClientError(TargetError):
    """A 4xx other than 429 (bad key, unknown model, unknown prompt): retrying will not help."""

    retryable = False
    kind = "client_error"


class ConfigError(ValueError):
    """A target that cannot be built (unknown provider, missing env variable, bad template)."""


@runtime_checkable
class ChatTarget(Protocol):
    name: str

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def expand_env(value: str, *, secrets: set[str] | None = None) -> str:
    """Replace ``${VAR}`` with the environment variable's value (collected into ``secrets``)."""

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(f"environment variable {name} is not set")
        val = os.environ[name]
        if secrets is not None and val:
            secrets.add(val)
        return val

    return _ENV_REF.sub(sub, value)


def read_api_key(env_name: str | None) -> str | None:
    """The API key from the environment variable ``env_name`` (None when no variable is named)."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ConfigError(f"environment variable {env_name} (the target's api_key_env) is not set or empty")
    return key


_POLICY_WORDS = ("content_policy", "content policy", "content_filter", "content management policy", "safety system", "responsibleai")


def is_content_policy_error(status: int, body: Any) -> str | None:
    """The provider's message if a 400 reply is a content-policy refusal, else None."""
    if status != 400:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or "") + " " + str(err.get("type") or "")
        msg = str(err.get("message") or "")
    else:
        code, msg = "", json.dumps(body)[:500] if body is not None else ""
    hay = (code + " " + msg).lower()
    if any(w in hay for w in _POLICY_WORDS):
        return msg or code.strip()
    return None


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process (loading the CA bundle costs ~0.1 s per client)."""
    return ssl.create_default_context(cafile=certifi.where())


class HttpTarget:
    """Shared httpx plumbing: one client, error mapping, secret redaction."""

    provider = "base"

    def __init__(
        self,
        name: str,
        base_url: str | None = None,
        model: str | None = None,
        *,
        api_key_env: str | None = None,
        params: dict[str, Any] | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
    ):
        self.name = name
        self.model = model
        self.timeout = timeout
        self.secrets: set[str] = set()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=limits,
            trust_env=False,
            verify=_ssl_context() if transport is None else True,
        )
        self.configure(base_url, dict(params or {}), api_key_env)

    def configure(self, base_url: str | None, params: dict[str, Any], api_key_env: str | None) -> None:
        """Provider set-up (URL, headers, key, body defaults); ``params`` is the provider's own copy."""

    async def aclose(self) -> None:
        await self._client.aclose()

    def configured_headers(self, params: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
        """``base`` plus the ``headers`` popped from ``params`` (``${VAR}`` expanded, values kept secret)."""
        headers = dict(base)
        for k, v in (params.pop("headers", None) or {}).items():
            headers[str(k)] = expand_env(str(v), secrets=self.secrets)
        return headers

    def api_key(self, env_name: str | None) -> str | None:
        """The API key from ``env_name`` (None when no variable is named), registered as a secret."""
        key = read_api_key(env_name)
        if key:
            self.secrets.add(key)
        return key

    def error_reply(self, status: int, data: Any, latency: float) -> Completion:
        """A 4xx reply: a content-policy refusal becomes a :class:`Completion`; anything else raises
        :class:`ClientError`."""
        policy = is_content_policy_error(status, data)
        if policy is None:
            raise self.client_error(status, data)
        return Completion(
            text=None,
            finish_reason="content_filter",
            provider_refusal="content_policy",
            provider_refusal_detail=self.redact(policy),
            latency_ms=latency,
        )

    def redact(self, text: str) -> str:
        for s in self.secrets:
            if s:
                text = text.replace(s, "***")
        return text

    async def post_json(self, url: str, body: dict, headers: dict[str, str]) -> tuple[int, Any, float]:
        """POST ``body``; return (status, parsed JSON or raw text, latency ms). Maps transport errors."""
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self._client.post(url, json=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TargetTimeout(f"no reply within {self.timeout:g}s ({type(exc).__name__})") from None
        except (httpx.TransportError, OSError) as exc:
            raise ConnectionFailed(self.redact(f"{type(exc).__name__}: {exc}")) from None
        latency = (time.perf_counter() - t0) * 1000.0
        try:
            data: Any = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = resp.text
        status = resp.status_code
        if status == 429:
            raise RateLimited(
                self.redact(f"HTTP 429: {_error_message(data)}"),
                status=429,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
            )
        if status >= 500 or status in (408, 409):
            raise ServerError(
                self.redact(f"HTTP {status}: {_error_message(data)}"),
                status=status,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
            )
        return status, data, latency

    def client_error(self, status: int, data: Any) -> ClientError:
        return ClientError(self.redact(f"HTTP {status}: {_error_message(data)}"), status=status)


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)[:500]
        if err:
            return str(err)[:500]
        return json.dumps(data)[:500]
    return str(data)[:500]


def openai_logprobs(lp: Any, positions: int = LOGPROB_POSITIONS) -> list[dict[str, Any]] | None:
    """Normalise OpenAI chat logprobs (or the legacy completions shape) to the stored format."""
    if not lp:
        return None
    out: list[dict[str, Any]] = []
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        for item in lp["content"][:positions]:
            if not isinstance(item, dict) or "token" not in item:
                continue
            out.append(
                {
                    "token": str(item["token"]),
                    "logprob": float(item.get("logprob", 0.0)),
                    "top_logprobs": [
                        {"token": str(t["token"]), "logprob": float(t["logprob"])}
                        for t in (item.get("top_logprobs") or [])
                        if isinstance(t, dict) and "token" in t and t.get("logprob") is not None
                    ],
                }
            )
    elif isinstance(lp, dict) and isinstance(lp.get("tokens"), list):  # legacy completions shape
        tokens, lps = lp["tokens"], lp.get("token_logprobs") or []
        tops = lp.get("top_logprobs") or []
        for i, tok in enumerate(tokens[:positions]):
            top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            out.append(
                {
                    "token": str(tok),
                    "logprob": float(lps[i]) if i < len(lps) and lps[i] is not None else 0.0,
                    "top_logprobs": [{"token": str(t), "logprob": float(v)} for t, v in top.items()],
                }
            )
    return out or None
