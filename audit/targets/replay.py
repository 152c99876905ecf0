"""The replay target: a real HTTP server that answers each known prompt with ChatGPT's recorded reply.

It speaks OpenAI chat completions (``POST /v1/chat/completions``) and Anthropic Messages
(``POST /v1/messages``), so an audit of the paper's prompts audits real responses of a real model.
The prompt is the last user message. An unknown prompt gets a 404 error (``code: unknown_prompt``)
unless a ``fallback`` reply is configured.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "chatgpt-refusals" / "all_hand_labeled.json"
DEFAULT_MODEL = "gpt-3.5-turbo-replay"


def _key(text: str) -> str:
    return " ".join(text.split())


def load_replies(path: str | Path | None = None) -> dict[str, tuple[str, str]]:
    """prompt (whitespace-normalised) → (response, finish_reason) from a JSON/JSONL file."""
    path = Path(path or DEFAULT_DATA)
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if path.suffix == ".json" else [json.loads(l) for l in text.splitlines() if l.strip()]
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            out.setdefault(_key(row["prompt"]), (row["response"], row.get("finish_reason") or "stop"))
    return out


def _tokens(text: str) -> int:
    """A rough token count (≈ 4/3 tokens per word) for the usage block."""
    return max(1, round(len(text.split()) * 4 / 3))


def _last_user(messages) -> str | None:
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else None
    return None


def make_app(
    data_path: str | Path | None = None,
    *,
    fallback: str | None = None,
    model_name: str = DEFAULT_MODEL,
    replies: dict[str, tuple[str, str]] | None = None,
) -> Starlette:
    """The replay server as a Starlette app (serve it with LoopbackServer or ``serve-target replay``)."""
    table = replies if replies is not None else load_replies(data_path)
    stats = {"requests": 0}

    def lookup(prompt: str | None):
        if prompt is None:
            return None
        hit = table.get(_key(prompt))
        if hit is None and fallback is not None:
            return (fallback, "stop")
        return hit

    async def _body(request: Request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def _error(status: int, message: str, code: str, etype: str = "invalid_request_error"):
        return JSONResponse({"error": {"message": message, "type": etype, "code": code}}, status_code=status)

    async def chat(request: Request):
        stats["requests"] += 1
        body = await _body(request)
        if body is None:
            return _error(400, "request body must be a JSON object", "invalid_json")
        prompt = _last_user(body.get("messages"))
        if prompt is None:
            return _error(400, "messages must contain a user message", "no_user_message")
        hit = lookup(prompt)
        if hit is None:
            return _error(404, "unknown prompt: this replay target only knows the recorded prompts", "unknown_prompt", "not_found_error")
        text, finish = hit
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": _tokens(prompt),
                    "completion_tokens": _tokens(text),
                    "total_tokens": _tokens(prompt) + _tokens(text),
                },
            }
        )

    async def messages(request: Request):
        stats["requests"] += 1
        body = await _body(request)
        if body is None:
            return _error(400, "request body must be a JSON object", "invalid_json")
        prompt = _last_user(body.get("messages"))
        hit = lookup(prompt)
        if hit is None:
            return JSONResponse(
                {"type": "error", "error": {"type": "not_found_error", "message": "unknown prompt"}},
                status_code=404,
            )
        text, finish = hit
        return JSONResponse(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model") or model_name,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn" if finish == "stop" else finish,
                "usage": {"input_tokens": _tokens(prompt or ""), "output_tokens": _tokens(text)},
            }
        )

    async def models(_request: Request):
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "replay"}]})

    async def health(_request: Request):
        return JSONResponse({"status": "ok", "prompts": len(table), "requests": stats["requests"]})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.stats = stats
    app.state.prompts = len(table)
    return app
