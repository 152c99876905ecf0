"""A generic HTTP target described entirely by configuration.

Target params (all JSON):

- ``headers``: ``{"X-Api-Key": "${MY_KEY}"}`` — ``${VAR}`` names an environment variable, read when
  the target is built; only the template is stored.
- ``body_template``: any JSON. A string that is exactly ``"{{name}}"`` is replaced by the value
  (any JSON type); ``{{name}}`` inside a longer string is replaced by its text. Names: ``prompt``,
  ``messages``, ``model``, ``temperature``, ``max_tokens``, ``system``.
  Default: ``{"model": "{{model}}", "messages": "{{messages}}"}``.
- ``response_path``: dotted path to the text in the reply, e.g. ``choices.0.message.content``
  (a leading ``$.`` is allowed). Default ``text``.
- optional ``finish_reason_path``, ``refusal_path`` (a non-empty value there is the provider's refusal
  signal), ``method`` (default POST).
"""

from __future__ import annotations

import json
import re
from typing import Any

from audit.targets.base import (
    BadResponse,
    ChatRequest,
    Completion,
    ConfigError,
    HttpTarget,
    expand_env,
)

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_MISSING = object()
DEFAULT_BODY = {"model": "{{model}}", "messages": "{{messages}}"}


def render_template(template: Any, values: dict[str, Any]) -> Any:
    """Fill ``{{name}}`` placeholders in a JSON template; entries whose value is None are dropped."""
    if isinstance(template, dict):
        out = {}
        for k, v in template.items():
            r = render_template(v, values)
            if r is not _MISSING:
                out[k] = r
        return out
    if isinstance(template, list):
        return [r for r in (render_template(v, values) for v in template) if r is not _MISSING]
    if isinstance(template, str):
        m = _PLACEHOLDER.fullmatch(template.strip())
        if m:
            name = m.group(1)
            if name not in values:
                raise ConfigError(f"body_template: unknown placeholder {{{{{name}}}}}")
            return _MISSING if values[name] is None else values[name]

        def sub(mm: re.Match) -> str:
            name = mm.group(1)
            if name not in values:
                raise ConfigError(f"body_template: unknown placeholder {{{{{name}}}}}")
            v = values[name]
            return "" if v is None else (v if isinstance(v, str) else json.dumps(v))

        return _PLACEHOLDER.sub(sub, template)
    return template


def extract_path(data: Any, path: str) -> Any:
    """Follow a dotted path (``a.b.0.c``; ``$.`` prefix allowed) through dicts and lists."""
    path = path.strip()
    if path.startswith("$"):
        path = path[1:].lstrip(".")
    cur = data
    for part in [p for p in re.split(r"\.|\[|\]", path) if p]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(part)
    return cur


class GenericHttpTarget(HttpTarget):
    provider = "http"

    def configure(self, base_url: str | None, params: dict[str, Any], api_key_env: str | None) -> None:
        if not base_url:
            raise ConfigError("an http target needs --base-url (the full URL to call)")
        self.url = expand_env(base_url, secrets=self.secrets)  # a key in the query names an env var
        self.method = str(params.pop("method", "POST")).upper()
        self.headers = self.configured_headers(params, {"content-type": "application/json"})
        key = self.api_key(api_key_env)
        if key:
            self.headers.setdefault("authorization", f"Bearer {key}")
        self.template = params.pop("body_template", None) or DEFAULT_BODY
        if isinstance(self.template, str):
            try:
                self.template = json.loads(self.template)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"body_template is not JSON: {exc}") from None
        self.response_path = params.pop("response_path", "text")
        self.finish_path = params.pop("finish_reason_path", None)
        self.refusal_path = params.pop("refusal_path", None)
        self.system = params.pop("system", None)
        self.extra = params  # other params are available as placeholders
        render_template(self.template, self._values(ChatRequest(messages=[{"role": "user", "content": "x"}])))

    def _values(self, request: ChatRequest) -> dict[str, Any]:
        messages = request.messages
        if self.system and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system}, *messages]
        values = {k: v for k, v in self.extra.items()}
        values.update(
            prompt=request.prompt_text,
            messages=messages,
            model=self.model,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            system=self.system,
            top_logprobs=request.logprobs,
        )
        return values

    async def complete(self, request: ChatRequest) -> Completion:
        body = render_template(self.template, self._values(request))
        status, data, latency = await self.post_json(self.url, body, self.headers)
        if status >= 400:
            return self.error_reply(status, data, latency)
        refusal = None
        if self.refusal_path:
            try:
                refusal = extract_path(data, self.refusal_path)
            except KeyError:
                refusal = None
        try:
            text = extract_path(data, self.response_path)
        except KeyError as exc:
            if refusal:
                text = None
            else:
                raise BadResponse(f"no {self.response_path!r} in reply (missing {exc.args[0]!r})") from None
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
        finish = None
        if self.finish_path:
            try:
                finish = extract_path(data, self.finish_path)
            except KeyError:
                finish = None
        return Completion(
            text=text,
            finish_reason=str(finish) if finish is not None else None,
            provider_refusal="refusal" if refusal else None,
            provider_refusal_detail=str(refusal) if refusal else None,
            latency_ms=latency,
        )
