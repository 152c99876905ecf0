"""Anthropic Messages API (``POST /v1/messages``)."""

from __future__ import annotations

from typing import Any

from audit.targets.base import (
    BadResponse,
    ChatRequest,
    Completion,
    HttpTarget,
    ServerError,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024


def messages_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    if url.endswith("/messages"):
        return url
    if url.endswith("/v1"):
        return url + "/messages"
    return url + "/v1/messages"


class AnthropicTarget(HttpTarget):
    provider = "anthropic"

    def configure(self, base_url: str | None, params: dict[str, Any], api_key_env: str | None) -> None:
        self.url = messages_url(base_url or "https://api.anthropic.com")
        self.headers = self.configured_headers(params, {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION})
        key = self.api_key(api_key_env)
        if key:
            self.headers["x-api-key"] = key
        self.system = params.pop("system", None)
        self.params = params

    def body(self, request: ChatRequest) -> dict[str, Any]:
        system = [m["content"] for m in request.messages if m.get("role") == "system"]
        if self.system:
            system.insert(0, self.system)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m for m in request.messages if m.get("role") != "system"],
            "max_tokens": request.max_tokens or self.params.get("max_tokens") or DEFAULT_MAX_TOKENS,
        }
        if system:
            body["system"] = "\n\n".join(system)
        body.update({k: v for k, v in self.params.items() if k != "max_tokens"})
        body.update(request.params)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        # The Messages API has no logprobs: request.logprobs is ignored (nothing is stored).
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        status, data, latency = await self.post_json(self.url, self.body(request), self.headers)
        if status == 529 or (isinstance(data, dict) and _etype(data) == "overloaded_error"):
            raise ServerError(f"HTTP {status}: overloaded", status=status)
        if status >= 400:
            return self.error_reply(status, data, latency)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise BadResponse(f"reply has no content list: {str(data)[:200]!r}")
        text = "".join(
            b.get("text", "") for b in data["content"] if isinstance(b, dict) and b.get("type") == "text"
        )
        stop = data.get("stop_reason")
        usage = data.get("usage") or {}
        refusal = "refusal" if stop == "refusal" else None
        return Completion(
            text=text,
            finish_reason=stop,
            provider_refusal=refusal,
            provider_refusal_detail="stop_reason=refusal" if refusal else None,
            prompt_tokens=usage.get("input_tokens"),
            completion_tokens=usage.get("output_tokens"),
            latency_ms=latency,
        )


def _etype(data: dict) -> str | None:
    err = data.get("error")
    return err.get("type") if isinstance(err, dict) else None
