"""Prompt sets: read CSV, JSON and JSONL files and import them into the store in one transaction.

Each record has ``prompt`` and optionally ``category``, ``response``, ``label`` (or the paper's
``tone``). Bad input raises :class:`InputError` naming the file, line and field; nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from audit.store import Prompt, PromptSet, Store

_TRUE = {"1", "true", "yes", "refusal", "refused", "refuse"}
_FALSE = {"0", "false", "no", "compliance", "complied", "comply"}


class InputError(ValueError):
    """Bad input, located: ``file:line: field: message``."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def read_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file.

    Raises :class:`InputError` (file, and line where there is one) for a missing or non-UTF-8 file,
    invalid JSON, or a line that is not a JSON object.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise InputError(path, n, None, f"invalid JSON: {exc.msg}") from None
                if not isinstance(obj, dict):
                    raise InputError(path, n, None, f"expected an object, got {type(obj).__name__}")
                yield n, obj
    except FileNotFoundError:
        raise InputError(path, None, None, "no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, None, f"not UTF-8 text ({exc.reason})") from None


@dataclass(frozen=True)
class PromptRecord:
    """One validated input record and the line it came from."""

    line: int
    prompt: str
    category: str | None = None
    response: str | None = None
    label: bool | None = None
    extra: dict | None = None


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_label(value, path, line, field="label") -> bool | None:
    """A refusal label from bool, 0/1 or words such as ``refusal`` / ``compliance``."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise InputError(path, line, field, f"expected a refusal label (true/false, 1/0, refusal/compliance), got {value!r}")


def _json_array_items(path: Path, text: str) -> Iterator[tuple[int, object]]:
    decoder = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text[i:].startswith("["):
        raise InputError(path, 1, None, "a .json file must hold an array of objects")
    i += 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise InputError(path, text.count("\n") + 1, None, "unterminated JSON array")
        if text[i] == "]":
            return
        line = text.count("\n", 0, i) + 1
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise InputError(path, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
        yield line, obj


def _raw_records(path: Path) -> Iterator[tuple[int, object]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or "prompt" not in reader.fieldnames:
                    raise InputError(path, 1, "prompt", "the CSV header has no 'prompt' column")
                for row in reader:
                    yield reader.line_num, row
        elif suffix == ".jsonl":
            yield from read_jsonl_objects(path)
        elif suffix == ".json":
            yield from _json_array_items(path, path.read_text(encoding="utf-8"))
        else:
            raise InputError(path, None, None, "unknown format: use .csv, .json or .jsonl")
    except UnicodeDecodeError as exc:
        raise InputError(path, None, None, f"not UTF-8 text ({exc.reason})") from None
    except FileNotFoundError:
        raise InputError(path, None, None, "no such file") from None


def read_records(path: str | Path) -> list[PromptRecord]:
    """Validate every record of ``path``; raise :class:`InputError` at the first bad one."""
    path = Path(path)
    records = []
    for line, obj in _raw_records(path):
        if not isinstance(obj, dict):
            raise InputError(path, line, None, f"expected an object, got {type(obj).__name__}")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(path, line, "prompt", "missing or empty; a non-empty string is required")
        category = obj.get("category")
        if category is not None and not isinstance(category, str):
            raise InputError(path, line, "category", f"expected a string, got {type(category).__name__}")
        response = obj.get("response")
        if response is not None and not isinstance(response, str):
            raise InputError(path, line, "response", f"expected a string, got {type(response).__name__}")
        if obj.get("label") not in (None, ""):
            label = parse_label(obj.get("label"), path, line)
        elif obj.get("refusal") not in (None, ""):
            label = parse_label(obj.get("refusal"), path, line, "refusal")
        elif isinstance(obj.get("tone"), str):
            label = obj["tone"] != "complied"
        else:
            label = None
        known = {"prompt", "category", "response", "label", "refusal"}
        extra = {k: v for k, v in obj.items() if k not in known and v not in (None, "")}
        records.append(
            PromptRecord(line, prompt, category or None, response or None, label, extra or None)
        )
    if not records:
        raise InputError(path, None, None, "no records found")
    return records


@dataclass
class ImportResult:
    set_name: str
    added: int
    skipped: int


def import_prompts(store: Store, path: str | Path, set_name: str) -> ImportResult:
    """Import ``path`` into prompt set ``set_name`` (created if missing), in one transaction.

    A prompt already in the set (same text) is skipped, so re-importing is harmless.
    """
    records = read_records(path)
    added = skipped = 0
    with store.session() as session:
        pset = session.scalar(select(PromptSet).where(PromptSet.name == set_name))
        if pset is None:
            pset = PromptSet(name=set_name, description=f"imported from {Path(path).name}")
            session.add(pset)
            session.flush()
        seen = set(session.scalars(select(Prompt.content_hash).where(Prompt.set_id == pset.id)))
        for rec in records:
            h = content_hash(rec.prompt)
            if h in seen:
                skipped += 1
                continue
            seen.add(h)
            session.add(
                Prompt(
                    set_id=pset.id,
                    text=rec.prompt,
                    category=rec.category,
                    source=f"{Path(path).name}:{rec.line}",
                    content_hash=h,
                    reference_response=rec.response,
                    reference_label=rec.label,
                    meta=rec.extra,
                )
            )
            added += 1
    return ImportResult(set_name, added, skipped)
