"""A fault-injecting OpenAI-compatible target: a real HTTP server for tests and benchmarks.

Each request draws one outcome with the configured rates: 429 with ``Retry-After``, 500, 503, a
reply slower than the client's timeout, a connection reset (the socket is aborted with an RST, or
closed mid-reply where the server does not expose it), malformed JSON, an empty ``choices`` list;
otherwise a normal reply. Normal replies are deterministic (``"Answer: <prompt>"``), carry a usage
block and, when asked, per-token logprobs. Prompts containing ``[message_refusal]``,
``[content_filter]`` or ``[policy400]`` get the matching provider refusal signal, so tests can check
that it is stored apart from the text.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, fields

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class FaultRates:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    slow: float = 0.0
    reset: float = 0.0
    malformed: float = 0.0
    empty_choices: float = 0.0

    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    @classmethod
    def uniform(cls, total: float) -> FaultRates:
        """``total`` spread evenly over the seven fault kinds."""
        each = total / 7
        return cls(*([each] * 7))


def _tokens(text: str) -> int:
    return max(1, round(len(text.split()) * 4 / 3))


def default_responder(prompt: str) -> str:
    return f"Answer: {prompt}"


def _fake_logprobs(text: str, k: int) -> dict:
    content = []
    for i, tok in enumerate(text.split()[:50]):
        lp = -0.05 * (i + 1)
        tops = [{"token": tok, "logprob": lp, "bytes": None}]
        tops += [{"token": f"alt{j}", "logprob": lp - j - 1.0, "bytes": None} for j in range(max(0, k - 1))]
        content.append({"token": tok, "logprob": lp, "bytes": None, "top_logprobs": tops[:k]})
    return {"content": content}


def _abort_connection(send) -> bool:
    """Reset the client's connection with an RST, if the server exposes its transport."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
    return True


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _replay_body(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


def make_app(
    rates: FaultRates | dict | None = None,
    *,
    retry_after: float = 1.0,
    slow_seconds: float = 30.0,
    latency_ms: float = 0.0,
    seed: int = 0,
    responder=default_responder,
    model_name: str = "faults",
):
    """An ASGI app: a fault-drawing outer layer around a Starlette chat-completions app."""
    if isinstance(rates, dict):
        rates = FaultRates(**rates)
    rates = rates or FaultRates()
    if rates.total() > 1.0 + 1e-9:
        raise ValueError(f"fault rates sum to {rates.total():.2f} > 1")
    rng = random.Random(seed)
    lock = threading.Lock()
    counts: Counter = Counter()
    kinds = [(f.name, getattr(rates, f.name)) for f in fields(rates)]

    def draw() -> str:
        with lock:
            x = rng.random()
        acc = 0.0
        for name, p in kinds:
            acc += p
            if x < acc:
                return name
        return "ok"

    async def chat(request: Request):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": {"message": "invalid JSON body", "type": "invalid_request_error"}}, 400)
        messages = body.get("messages") if isinstance(body, dict) else None
        prompt = ""
        for m in reversed(messages or []):
            if isinstance(m, dict) and m.get("role") == "user":
                prompt = str(m.get("content") or "")
                break
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000.0)
        if "[policy400]" in prompt:
            return JSONResponse(
                {"error": {"message": "Your request was rejected as a result of our safety system.",
                           "type": "invalid_request_error", "code": "content_policy_violation"}},
                status_code=400,
            )
        text = responder(prompt)
        message = {"role": "assistant", "content": text, "refusal": None}
        finish = "stop"
        if "[message_refusal]" in prompt:
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that request."}
        elif "[content_filter]" in prompt:
            message = {"role": "assistant", "content": "", "refusal": None}
            finish = "content_filter"
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        if finish == "content_filter":
            choice["content_filter_results"] = {"violence": {"filtered": True, "severity": "high"}}
        if body.get("logprobs") and message.get("content"):
            choice["logprobs"] = _fake_logprobs(text, int(body.get("top_logprobs") or 1))
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or model_name,
                "choices": [choice],
                "usage": {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(text),
                          "total_tokens": _tokens(prompt) + _tokens(text)},
            }
        )

    async def health(_request: Request):
        return JSONResponse({"status": "ok", "counts": dict(counts)})

    inner = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )

    async def app(scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await inner(scope, receive, send)
            return
        kind = draw()
        with lock:
            counts["requests"] += 1
            counts[kind] += 1
        if kind == "ok":
            await inner(scope, receive, send)
        elif kind == "rate_429":
            await JSONResponse(
                {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"}},
                status_code=429,
                headers={"retry-after": f"{retry_after:g}"},
            )(scope, receive, send)
        elif kind in ("rate_500", "rate_503"):
            status = 500 if kind == "rate_500" else 503
            await JSONResponse({"error": {"message": f"injected {status}", "type": "server_error"}}, status_code=status)(
                scope, receive, send
            )
        elif kind == "slow":
            body = await _read_body(receive)
            await asyncio.sleep(slow_seconds)
            await inner(scope, _replay_body(body), send)  # the client has usually given up by now
        elif kind == "reset":
            if _abort_connection(send):
                await asyncio.sleep(0.01)  # let the server notice the disconnect; the reply below is dropped
                await Response(b"", status_code=500)(scope, receive, send)
            else:
                # No transport exposed: start a reply and die mid-body, so the peer sees a cut connection.
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
                await send({"type": "http.response.body", "body": b'{"choices": [', "more_body": True})
                raise ConnectionResetError("injected connection reset")
        elif kind == "malformed":
            await Response('{"id": "x", "choices": [{"message": {"content": "trunc', media_type="application/json")(
                scope, receive, send
            )
        elif kind == "empty_choices":
            await JSONResponse({"id": "x", "object": "chat.completion", "choices": [], "usage": {}})(scope, receive, send)

    app.counts = counts  # type: ignore[attr-defined]
    app.rates = rates  # type: ignore[attr-defined]
    return app

