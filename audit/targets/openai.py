"""OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server, Ollama ``/v1``, LM Studio)."""

from __future__ import annotations

import json
from typing import Any

from audit.targets.base import (
    BadResponse,
    ChatRequest,
    Completion,
    HttpTarget,
    openai_logprobs,
)

#: Target params that configure the client rather than go into the request body.
CLIENT_PARAMS = {"headers", "system"}


def chat_completions_url(base_url: str) -> str:
    """``.../v1`` → ``.../v1/chat/completions``; a full endpoint URL is kept; a bare host gets ``/v1``."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.rsplit("/", 1)[-1].startswith("v") and url.rsplit("/", 1)[-1][1:].isdigit():
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages


class OpenAITarget(HttpTarget):
    provider = "openai"

    def configure(self, base_url: str | None, params: dict[str, Any], api_key_env: str | None) -> None:
        self.url = chat_completions_url(base_url)
        self.headers = self.configured_headers(params, {"content-type": "application/json"})
        key = self.api_key(api_key_env)
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        self.system = params.pop("system", None)
        self.params = params

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": with_system(request.messages, self.system)}
        if self.model:
            body["model"] = self.model
        body.update(self.params)
        body.update(request.params)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = int(request.logprobs)
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        status, data, latency = await self.post_json(self.url, self.body(request), self.headers)
        if status >= 400:
            return self.error_reply(status, data, latency)
        return parse_chat_completion(data, latency)


def parse_chat_completion(data: Any, latency: float | None = None) -> Completion:
    """A :class:`Completion` from an OpenAI chat-completions reply; BadResponse if it is not one."""
    if not isinstance(data, dict):
        raise BadResponse(f"reply is not a JSON object: {str(data)[:200]!r}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BadResponse("reply has no choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BadResponse("choices[0] is not an object")
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise BadResponse("choices[0].message is not an object")
    text = message.get("content")
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    finish = choice.get("finish_reason")
    refusal = message.get("refusal")
    provider_refusal = detail = None
    if refusal:
        provider_refusal, detail = "message_refusal", str(refusal)
    elif finish == "content_filter":
        provider_refusal = "content_filter"
        cfr = choice.get("content_filter_results")
        detail = json.dumps(cfr)[:1000] if cfr else "finish_reason=content_filter"
    if text is None and provider_refusal is None:
        raise BadResponse("choices[0].message has no content")
    usage = data.get("usage") or {}
    return Completion(
        text=text,
        finish_reason=finish,
        provider_refusal=provider_refusal,
        provider_refusal_detail=detail,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        logprobs=openai_logprobs(choice.get("logprobs")),
        latency_ms=latency,
    )


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None
