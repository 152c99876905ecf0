"""Batch audit jobs for cron: one TOML file, validated before anything runs; safe to run unattended.

A job audits targets on prompt sets (plus past/future-tense probes and the CoCoNot over-refusal
contrast set), labels the responses, compares every run with the same run of the previous job
date (drift), and writes reports. See ``docs/jobs.md`` for the file format, the summary schema and
the exit codes:

* 0 ok, 1 an alert fired, 2 config or input error, 3 target failures above the threshold,
  4 another run of the job holds the lock (5: the job itself failed unexpectedly; see the log).

Runs never overlap (a ``flock`` file beside a SQLite store, ``pg_try_advisory_lock`` on PostgreSQL),
and they are idempotent: the same job and date resume the same ``JobRun`` and the same collector
runs, named ``<job>-<target>-<set>-<date>``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import math
import os
import re
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("audit.jobs")

EXIT_OK, EXIT_ALERT, EXIT_CONFIG, EXIT_TARGET_FAILURES, EXIT_LOCKED, EXIT_CRASH = 0, 1, 2, 3, 4, 5
BUILTINS = ("replay", "refusal-token-sim")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ============================================================================ configuration


class ConfigError(ValueError):
    """Invalid job configuration: every problem names its key and what was expected."""

    def __init__(self, path: str | Path, problems: list[tuple[str, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}: {key}: {msg}" if key else f"{self.path}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


@dataclass
class TargetSpec:
    name: str
    builtin: str | None = None  # "replay" | "refusal-token-sim": started on 127.0.0.1 by the job
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the built-in app
    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    refusal_tokens: dict[str, Any] | None = None
    audit: bool = True  # False: only used as a reformulator


@dataclass
class SetSpec:
    name: str
    path: Path
    harmful: bool = False
    max_prompts: int | None = None
    targets: list[str] | None = None  # None: every audited target


@dataclass
class Budget:
    samples: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int = 4
    rpm: float | None = None
    tpm: float | None = None
    max_requests: int | None = None
    max_tokens_total: int | None = None
    logprobs: int | None = None
    use_cache: bool = False  # True: copy identical earlier answers instead of asking again


@dataclass
class TenseProbe:
    enabled: bool = False
    k: int = 3
    tenses: list[str] = field(default_factory=lambda: ["past", "future"])
    sets: list[str] | None = None  # None: every harmful set
    categories: list[str] | None = None  # None: every category
    max_prompts: int | None = None
    reformulator: str | None = None  # a [[targets]] name; None: rule-based rewrites
    reformulator_temperature: float | None = 1.0
    targets: list[str] | None = None


@dataclass
class ContrastProbe:
    enabled: bool = False
    path: Path | None = None
    set_name: str = "coconot-contrast"
    max_prompts: int | None = None
    targets: list[str] | None = None


@dataclass
class Alerts:
    min_change: float = 0.10
    alpha: float = 0.05
    webhook_url_env: str | None = None
    max_failure_rate: float = 0.2


@dataclass
class JobConfig:
    path: Path
    job: str
    output_dir: Path | None
    db: str | None = None
    log_file: Path | None = None
    seed: int = 0
    targets: list[TargetSpec] = field(default_factory=list)
    prompt_sets: list[SetSpec] = field(default_factory=list)
    budget: Budget = field(default_factory=Budget)
    classifier_model: str = "default"
    classifier_cascade: bool = False
    tense: TenseProbe = field(default_factory=TenseProbe)
    contrast: ContrastProbe = field(default_factory=ContrastProbe)
    refusal_tokens_enabled: bool = True
    refusal_token_thresholds: dict[str, float] | None = None
    alerts: Alerts = field(default_factory=Alerts)
    ngrams: bool = True

    def target(self, name: str) -> TargetSpec:
        return next(t for t in self.targets if t.name == name)

    @property
    def audited_targets(self) -> list[TargetSpec]:
        return [t for t in self.targets if t.audit]


_MISSING = object()


class _Checker:
    """Collects every problem of a TOML document, naming each by its dotted key."""

    def __init__(self, base: Path):
        self.base = base
        self.problems: list[tuple[str, str]] = []

    def bad(self, key: str, msg: str) -> None:
        self.problems.append((key, msg))

    def table(self, data: Any, key: str) -> dict:
        if data is _MISSING or data is None:
            return {}
        if not isinstance(data, dict):
            self.bad(key, f"expected a table ([{key}]), got {_tname(data)}")
            return {}
        return data

    def unknown(self, data: dict, prefix: str, allowed: set[str]) -> None:
        for k in data:
            if k not in allowed:
                self.bad(_join(prefix, k), f"unknown key; expected one of: {', '.join(sorted(allowed))}")

    def get(self, data: dict, prefix: str, key: str, kind: str, default: Any = _MISSING, **kw) -> Any:
        name = _join(prefix, key)
        if key not in data:
            if default is _MISSING:
                self.bad(name, f"missing; expected {_EXPECT[kind](**kw)}")
                return None
            return default
        value = data[key]
        ok, out = _CONVERT[kind](self, value, **kw)
        if not ok:
            self.bad(name, f"expected {_EXPECT[kind](**kw)}, got {_show(value)}")
            return default if default is not _MISSING else None
        return out

    def path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.base / p).resolve()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _tname(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a float"}.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return _tname(v)
    return f"{_tname(v)} {v!r}"


def _c_name(_c, v):
    return (isinstance(v, str) and bool(_NAME_RE.match(v))), v


def _c_str(_c, v):
    return (isinstance(v, str) and bool(v.strip())), v


def _c_env(_c, v):
    return (isinstance(v, str) and bool(_ENV_RE.match(v))), v


def _c_int(_c, v, lo=None, hi=None):
    ok = isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)
    return ok, v


def _c_float(_c, v, lo=None, hi=None, lo_open=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    return ok, float(v) if ok else v


def _c_bool(_c, v):
    return isinstance(v, bool), v


def _c_path(c, v, must_exist=False):
    if not (isinstance(v, str) and v.strip()):
        return False, v
    p = c.path(v)
    if must_exist and not p.exists():
        return False, v
    return True, p


def _c_names(_c, v):
    return (isinstance(v, list) and all(isinstance(x, str) and x for x in v)), v


def _c_table(_c, v):
    return isinstance(v, dict), v


def _c_choice(_c, v, choices=()):
    return v in choices, v


_CONVERT = {
    "name": _c_name, "str": _c_str, "env": _c_env, "int": _c_int, "float": _c_float, "bool": _c_bool,
    "path": _c_path, "names": _c_names, "table": _c_table, "choice": _c_choice,
}


def _expect_int(lo=None, hi=None):
    if lo is not None and hi is not None:
        return f"an integer from {lo} to {hi}"
    if lo == 1:
        return "a positive integer"
    if lo == 0:
        return "an integer >= 0"
    return "an integer"


def _expect_float(lo=None, hi=None, lo_open=False):
    if lo is not None and hi is not None:
        return f"a number in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"a number {'>' if lo_open else '>='} {lo}"
    return "a number"


_EXPECT = {
    "name": lambda: "a name of letters, digits, '_', '.' or '-' (at most 64 characters, starting with a letter or digit)",
    "str": lambda: "a non-empty string",
    "env": lambda: "the NAME of an environment variable (letters, digits, '_'), not its value",
    "int": _expect_int,
    "float": _expect_float,
    "bool": lambda: "true or false",
    "path": lambda must_exist=False: "the path of an existing file" if must_exist else "a path",
    "names": lambda: "an array of non-empty strings",
    "table": lambda: "a table",
    "choice": lambda choices=(): "one of " + ", ".join(repr(c) for c in choices),
}

_TOP_KEYS = {"job", "output_dir", "db", "log_file", "seed", "targets", "prompt_sets", "budget", "classifier",
             "probes", "refusal_tokens", "alerts", "reports"}


def load_config(path: str | Path, *, output_dir: str | Path | None = None) -> JobConfig:
    """Read and validate a job file; raise :class:`ConfigError` listing every problem found.

    Relative paths in the file are relative to the file's folder. ``output_dir`` (``--out``)
    overrides the file's ``output_dir``; one of them is required.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, [("", "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [("", f"not UTF-8 text ({exc.reason})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"invalid TOML: {exc}")]) from None
    c = _Checker(path.resolve().parent)
    c.unknown(raw, "", _TOP_KEYS)
    job = c.get(raw, "", "job", "name")
    out = Path(output_dir).resolve() if output_dir is not None else c.get(raw, "", "output_dir", "path", None)
    if out is None and "output_dir" not in raw:
        c.bad("output_dir", "missing; expected a path (or pass --out DIR)")
    cfg = JobConfig(path=path, job=job or "", output_dir=out)
    cfg.db = c.get(raw, "", "db", "str", None)
    log_file = c.get(raw, "", "log_file", "str", None)
    if log_file:
        cfg.log_file = Path(os.path.expanduser(log_file))  # a relative path is relative to the output folder
    cfg.seed = c.get(raw, "", "seed", "int", 0)

    # -- targets
    targets_raw = raw.get("targets", _MISSING)
    if targets_raw is _MISSING:
        c.bad("targets", "missing; expected at least one [[targets]] table")
        targets_raw = []
    elif not isinstance(targets_raw, list) or not all(isinstance(t, dict) for t in targets_raw) or not targets_raw:
        c.bad("targets", f"expected an array of tables ([[targets]]), got {_show(targets_raw)}")
        targets_raw = []
    from audit.targets import PROVIDERS

    for i, t in enumerate(targets_raw):
        pre = f"targets[{i}]"
        c.unknown(t, pre, {"name", "builtin", "options", "provider", "base_url", "model", "api_key_env", "params",
                           "refusal_tokens", "audit"})
        spec = TargetSpec(name=c.get(t, pre, "name", "name") or "")
        spec.builtin = c.get(t, pre, "builtin", "choice", None, choices=BUILTINS)
        spec.options = c.get(t, pre, "options", "table", {})
        spec.provider = c.get(t, pre, "provider", "choice", None, choices=PROVIDERS)
        spec.base_url = c.get(t, pre, "base_url", "str", None)
        spec.model = c.get(t, pre, "model", "str", None)
        spec.api_key_env = c.get(t, pre, "api_key_env", "env", None)
        spec.params = c.get(t, pre, "params", "table", {})
        spec.refusal_tokens = c.get(t, pre, "refusal_tokens", "table", None)
        spec.audit = c.get(t, pre, "audit", "bool", True)
        if spec.builtin and (spec.provider or spec.base_url):
            c.bad(pre, "set either 'builtin' (a loopback target the job starts) or 'provider' + 'base_url', not both")
        elif not spec.builtin:
            if spec.provider is None and "provider" not in t:
                c.bad(_join(pre, "provider"), f"missing; expected one of {', '.join(repr(p) for p in PROVIDERS)} (or set 'builtin')")
            if spec.base_url is None and "base_url" not in t and spec.provider != "anthropic":
                c.bad(_join(pre, "base_url"), "missing; expected the API base URL, e.g. 'https://api.openai.com/v1'")
            if spec.options:
                c.bad(_join(pre, "options"), "only built-in targets take 'options'")
        if spec.builtin:
            _check_builtin_options(c, pre, spec)
        cfg.targets.append(spec)
    names = [t.name for t in cfg.targets if t.name]
    for n in {n for n in names if names.count(n) > 1}:
        c.bad("targets", f"target name {n!r} is used more than once")
    if cfg.targets and not any(t.audit for t in cfg.targets):
        c.bad("targets", "no target to audit: every target has audit = false")
    target_names = set(names)

    def _check_target_refs(key: str, refs: list[str] | None) -> None:
        for r in refs or []:
            if r not in target_names:
                c.bad(key, f"unknown target {r!r}; expected one of: {', '.join(sorted(target_names)) or '(none)'}")

    # -- prompt sets
    sets_raw = raw.get("prompt_sets", [])
    if not isinstance(sets_raw, list) or not all(isinstance(s, dict) for s in sets_raw):
        c.bad("prompt_sets", f"expected an array of tables ([[prompt_sets]]), got {_show(sets_raw)}")
        sets_raw = []
    for i, s in enumerate(sets_raw):
        pre = f"prompt_sets[{i}]"
        c.unknown(s, pre, {"name", "path", "harmful", "max_prompts", "targets"})
        spec = SetSpec(
            name=c.get(s, pre, "name", "name") or "",
            path=c.get(s, pre, "path", "path", must_exist=True),
            harmful=c.get(s, pre, "harmful", "bool", False),
            max_prompts=c.get(s, pre, "max_prompts", "int", None, lo=1),
            targets=c.get(s, pre, "targets", "names", None),
        )
        _check_target_refs(_join(pre, "targets"), spec.targets)
        cfg.prompt_sets.append(spec)
    set_names = [s.name for s in cfg.prompt_sets if s.name]
    for n in {n for n in set_names if set_names.count(n) > 1}:
        c.bad("prompt_sets", f"prompt set name {n!r} is used more than once")

    # -- budget
    b = c.table(raw.get("budget", _MISSING), "budget")
    c.unknown(b, "budget", set(Budget.__dataclass_fields__))
    cfg.budget = Budget(
        samples=c.get(b, "budget", "samples", "int", 1, lo=1, hi=100),
        temperature=c.get(b, "budget", "temperature", "float", None, lo=0.0, hi=2.0),
        max_tokens=c.get(b, "budget", "max_tokens", "int", None, lo=1),
        concurrency=c.get(b, "budget", "concurrency", "int", 4, lo=1, hi=256),
        rpm=c.get(b, "budget", "rpm", "float", None, lo=0.0, lo_open=True),
        tpm=c.get(b, "budget", "tpm", "float", None, lo=0.0, lo_open=True),
        max_requests=c.get(b, "budget", "max_requests", "int", None, lo=1),
        max_tokens_total=c.get(b, "budget", "max_tokens_total", "int", None, lo=1),
        logprobs=c.get(b, "budget", "logprobs", "int", None, lo=0, hi=20),
        use_cache=c.get(b, "budget", "use_cache", "bool", False),
    )

    # -- classifier
    cl = c.table(raw.get("classifier", _MISSING), "classifier")
    c.unknown(cl, "classifier", {"model", "cascade"})
    model = c.get(cl, "classifier", "model", "str", "default")
    if model and model != "default":
        mp = c.path(model)
        if not mp.is_dir():
            c.bad("classifier.model", f"expected 'default' or the folder of a saved response classifier, got {model!r} (no such folder)")
        model = str(mp)
    cfg.classifier_model = model or "default"
    cfg.classifier_cascade = c.get(cl, "classifier", "cascade", "bool", False)

    # -- probes
    probes = c.table(raw.get("probes", _MISSING), "probes")
    c.unknown(probes, "probes", {"tense", "contrast"})
    tp = c.table(probes.get("tense", _MISSING), "probes.tense")
    c.unknown(tp, "probes.tense", set(TenseProbe.__dataclass_fields__))
    pre = "probes.tense"
    cfg.tense = TenseProbe(
        enabled=c.get(tp, pre, "enabled", "bool", bool(tp)),
        k=c.get(tp, pre, "k", "int", 3, lo=1, hi=20),
        tenses=c.get(tp, pre, "tenses", "names", ["past", "future"]),
        sets=c.get(tp, pre, "sets", "names", None),
        categories=c.get(tp, pre, "categories", "names", None),
        max_prompts=c.get(tp, pre, "max_prompts", "int", None, lo=1),
        reformulator=c.get(tp, pre, "reformulator", "name", None),
        reformulator_temperature=c.get(tp, pre, "reformulator_temperature", "float", 1.0, lo=0.0, hi=2.0),
        targets=c.get(tp, pre, "targets", "names", None),
    )
    for t in cfg.tense.tenses or []:
        if t not in ("past", "future"):
            c.bad(f"{pre}.tenses", f"expected 'past' and/or 'future', got {t!r}")
    for s in cfg.tense.sets or []:
        if s not in set_names:
            c.bad(f"{pre}.sets", f"unknown prompt set {s!r}; expected one of: {', '.join(set_names) or '(none)'}")
    if cfg.tense.reformulator:
        _check_target_refs(f"{pre}.reformulator", [cfg.tense.reformulator])
    _check_target_refs(f"{pre}.targets", cfg.tense.targets)
    if cfg.tense.enabled and not cfg.tense.sets and not any(s.harmful for s in cfg.prompt_sets):
        c.bad(f"{pre}.sets", "the tense probe is enabled but no prompt set has harmful = true and 'sets' is not given")

    cp = c.table(probes.get("contrast", _MISSING), "probes.contrast")
    c.unknown(cp, "probes.contrast", {"enabled", "path", "set_name", "max_prompts", "targets"})
    pre = "probes.contrast"
    enabled = c.get(cp, pre, "enabled", "bool", bool(cp))
    default_path = Path(__file__).resolve().parents[1] / "data" / "coconot" / "coconot_contrast_eval.jsonl"
    cfg.contrast = ContrastProbe(
        enabled=enabled,
        path=c.get(cp, pre, "path", "path", default_path, must_exist=True),
        set_name=c.get(cp, pre, "set_name", "name", "coconot-contrast"),
        max_prompts=c.get(cp, pre, "max_prompts", "int", None, lo=1),
        targets=c.get(cp, pre, "targets", "names", None),
    )
    _check_target_refs(f"{pre}.targets", cfg.contrast.targets)
    if enabled and cfg.contrast.set_name in set_names:
        c.bad(f"{pre}.set_name", f"{cfg.contrast.set_name!r} is also the name of a [[prompt_sets]] entry; expected a distinct name")
    if not cfg.prompt_sets and not cfg.contrast.enabled:
        c.bad("prompt_sets", "missing; expected at least one [[prompt_sets]] table (or an enabled [probes.contrast])")

    # -- refusal tokens
    rt = c.table(raw.get("refusal_tokens", _MISSING), "refusal_tokens")
    c.unknown(rt, "refusal_tokens", {"enabled", "thresholds"})
    cfg.refusal_tokens_enabled = c.get(rt, "refusal_tokens", "enabled", "bool", True)
    thr = c.get(rt, "refusal_tokens", "thresholds", "table", None)
    if thr is not None:
        clean = {}
        for k, v in thr.items():
            ok, fv = _c_float(c, v, lo=0.0, hi=1.0)
            if not ok:
                c.bad(f"refusal_tokens.thresholds.{k}", f"expected a probability in [0, 1], got {_show(v)}")
            else:
                clean[k] = fv
        cfg.refusal_token_thresholds = clean

    # -- alerts
    al = c.table(raw.get("alerts", _MISSING), "alerts")
    c.unknown(al, "alerts", set(Alerts.__dataclass_fields__))
    cfg.alerts = Alerts(
        min_change=c.get(al, "alerts", "min_change", "float", 0.10, lo=0.0, hi=1.0),
        alpha=c.get(al, "alerts", "alpha", "float", 0.05, lo=0.0, hi=1.0, lo_open=True),
        webhook_url_env=c.get(al, "alerts", "webhook_url_env", "env", None),
        max_failure_rate=c.get(al, "alerts", "max_failure_rate", "float", 0.2, lo=0.0, hi=1.0),
    )

    rep = c.table(raw.get("reports", _MISSING), "reports")
    c.unknown(rep, "reports", {"ngrams"})
    cfg.ngrams = c.get(rep, "reports", "ngrams", "bool", True)

    if c.problems:
        raise ConfigError(path, c.problems)
    return cfg


def _check_builtin_options(c: _Checker, pre: str, spec: TargetSpec) -> None:
    """Validate a built-in target's options now, so that a bad one fails before anything runs."""
    key = _join(pre, "options")
    if spec.builtin == "replay":
        allowed = {"data_path", "fallback", "model_name"}
        for k in spec.options:
            if k not in allowed:
                c.bad(f"{key}.{k}", f"unknown option of the replay target; expected one of: {', '.join(sorted(allowed))}")
        dp = spec.options.get("data_path")
        if dp is not None:
            ok, p = _c_path(c, dp, must_exist=True)
            if not ok:
                c.bad(f"{key}.data_path", f"expected the path of an existing JSON/JSONL file of prompt/response pairs, got {_show(dp)}")
            else:
                spec.options["data_path"] = str(p)
        for k in ("fallback", "model_name"):
            if k in spec.options and not isinstance(spec.options[k], str):
                c.bad(f"{key}.{k}", f"expected a string, got {_show(spec.options[k])}")
    elif spec.builtin == "refusal-token-sim":
        from audit.targets.refusal_token_sim import SimConfig, SimConfigError

        try:
            SimConfig.from_dict(dict(spec.options))
        except (SimConfigError, TypeError, ValueError) as exc:
            c.bad(key, f"invalid refusal-token simulator config: {exc}")


# ============================================================================ locking


class LockHeld(RuntimeError):
    """Another run of the same job holds the lock."""


def lock_key(job: str) -> int:
    """The PostgreSQL advisory-lock key of a job (a signed 64-bit hash of its name)."""
    return int.from_bytes(hashlib.sha256(f"refusal-audit-job:{job}".encode()).digest()[:8], "big", signed=True)


def sqlite_lock_path(store_url: str, job: str, output_dir: Path) -> Path:
    """``<db file>.job-<job>.lock`` beside the SQLite file (in the output folder for in-memory DBs)."""
    from sqlalchemy.engine import make_url

    db = make_url(store_url).database
    if db in (None, "", ":memory:"):
        return output_dir / f".job-{job}.lock"
    p = Path(db)
    return p.parent / f"{p.name}.job-{job}.lock"


@contextlib.contextmanager
def job_lock(store, job: str, output_dir: Path) -> Iterator[str]:
    """Hold the job's lock for the duration, or raise :class:`LockHeld` at once (never waits).

    Yields a description of the lock. The lock dies with the process, so a crashed run never
    blocks the next one.
    """
    if store.is_postgres:
        from sqlalchemy import text

        key = lock_key(job)
        conn = store.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
            if not got:
                raise LockHeld(f"another run of job {job!r} is in progress (PostgreSQL advisory lock {key} is held)")
            try:
                yield f"pg_advisory_lock({key})"
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        finally:
            conn.close()
        return
    path = sqlite_lock_path(store.url, job, output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LockHeld(f"another run of job {job!r} is in progress (lock file {path} is held by {holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
        fh.flush()
        try:
            yield str(path)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


# ============================================================================ the runner


@dataclass
class RunEntry:
    """One collector run of the job: a target on a prompt set (or on a probe's derived set)."""

    target: str
    prompt_set: str  # the stored set it collects
    probe: str | None  # None | "contrast" | "tense-past" | "tense-future" | "reformulator-past" | ...
    base: str  # the name stem: run name = f"{job}-{target}-{base}-{date}"
    prompt_ids: list[int]
    source_set: str | None = None  # for tense probes: the original set

    def run_name(self, job: str, date: str) -> str:
        return f"{job}-{self.target}-{self.base}-{date}"


@dataclass
class JobResult:
    exit_code: int
    summary: dict | None = None
    report_dir: Path | None = None
    messages: list[str] = field(default_factory=list)


class JobInputError(Exception):
    """Bad input discovered while running (a prompt file, the date, the store URL): exit code 2."""


def parse_date(value: str | None) -> str:
    if value is None:
        return dt.date.today().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat() if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else _bad_date(value)
    except ValueError:
        return _bad_date(value)


def _bad_date(value: str) -> str:
    raise JobInputError(f"--date: expected a date YYYY-MM-DD, got {value!r}")


def store_url_for(cfg: JobConfig, db_url: str | None) -> str:
    """``--db``/``REFUSAL_AUDIT_DB`` if given, else the file's ``db``, else ``<output_dir>/audit.db``."""
    if db_url:
        return db_url
    if cfg.db:
        if "://" not in cfg.db and not Path(cfg.db).is_absolute():
            return f"sqlite:///{(cfg.path.resolve().parent / cfg.db).resolve()}"
        return cfg.db
    assert cfg.output_dir is not None
    return f"sqlite:///{cfg.output_dir / 'audit.db'}"


def redact_url(url: str) -> str:
    """A store URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as its scheme only
        return url.split("://", 1)[0] + "://…"


def select_prompts(store, set_name: str, *, max_prompts: int | None, seed: int,
                   categories: list[str] | None = None, within: list[int] | None = None) -> list[tuple[int, str, str | None]]:
    """``(id, text, category)`` of the prompts a job uses from a set: all of them, or a fixed sample.

    The sample is stable from night to night (it orders prompts by a seeded hash of their text, not
    by insertion), so successive runs compare the same prompts.
    """
    from sqlalchemy import select

    from audit.store import Prompt, PromptSet

    with store.session() as s:
        q = select(Prompt.id, Prompt.text, Prompt.category, Prompt.content_hash).join(PromptSet).where(PromptSet.name == set_name)
        rows = s.execute(q).all()
    if within is not None:
        keep = set(within)
        rows = [r for r in rows if r.id in keep]
    if categories is not None:
        rows = [r for r in rows if (r.category or "(none)") in categories]
    rows.sort(key=lambda r: hashlib.sha256(f"{seed}:{r.content_hash}".encode()).hexdigest())
    if max_prompts is not None:
        rows = rows[:max_prompts]
    rows.sort(key=lambda r: r.id)
    return [(r.id, r.text, r.category) for r in rows]


def validate_inputs(cfg: JobConfig) -> None:
    """Read every prompt file now (no writes), so a bad line fails before anything runs."""
    from audit.prompts import read_records

    for s in cfg.prompt_sets:
        read_records(s.path)
    if cfg.contrast.enabled and cfg.contrast.path:
        read_records(cfg.contrast.path)


class _LogToFile:
    """Send the ``audit`` loggers to the job's log file for the duration of a run."""

    def __init__(self, path: Path):
        self.path = path
        self.handler: logging.Handler | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        root = logging.getLogger("audit")
        root.addHandler(self.handler)
        self._level = root.level
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger("audit")
        if exc[0] is not None and not issubclass(exc[0], (LockHeld, JobInputError)):
            log.error("job aborted: %s: %s", exc[0].__name__, exc[1], exc_info=exc)
        root.removeHandler(self.handler)
        root.setLevel(self._level)
        self.handler.close()


def run_job(cfg: JobConfig, *, run_date: str | None = None, db_url: str | None = None,
            progress: bool = False, echo=print) -> JobResult:
    """Run a validated job for ``run_date`` (default today) and return its exit code and summary.

    Raises :class:`JobInputError` / :class:`audit.prompts.InputError` for bad input (exit 2) and
    :class:`LockHeld` when another run of the job is in progress (exit 4); both before any work.
    """
    date = parse_date(run_date)
    validate_inputs(cfg)
    assert cfg.output_dir is not None
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.log_file if cfg.log_file and cfg.log_file.is_absolute() else cfg.output_dir / (cfg.log_file or "job.log")
    url = store_url_for(cfg, db_url)
    from audit.store import open_store

    with _LogToFile(log_path):
        try:
            store = open_store(url)
        except Exception as exc:  # noqa: BLE001 - any failure to open the store is an input error
            raise JobInputError(f"cannot open the store {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
        try:
            with job_lock(store, cfg.job, cfg.output_dir) as lock_desc:
                log.info("job %s %s: started (config %s, store %s, lock %s)", cfg.job, date, cfg.path, redact_url(url), lock_desc)
                runner = _Runner(cfg, store, date, url, progress=progress, echo=echo)
                result = runner.run()
                log.info("job %s %s: finished with exit code %d", cfg.job, date, result.exit_code)
                result.messages.append(f"log: {log_path}")
                return result
        except LockHeld as exc:
            log.warning("job %s %s: not started: %s", cfg.job, date, exc)
            raise
        finally:
            store.dispose()


class _Runner:
    def __init__(self, cfg: JobConfig, store, date: str, url: str, *, progress: bool, echo):
        self.cfg, self.store, self.date, self.url = cfg, store, date, url
        self.progress, self.echo = progress, echo
        self.classifier = None
        self.entries: list[RunEntry] = []
        self.collect_info: dict[str, dict] = {}
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._t0 = time.monotonic()
        self.timings: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def _timed(self, key: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        finally:
            self.timings[key] += time.monotonic() - t

    # -- steps
    def run(self) -> JobResult:
        from sqlalchemy import select

        from audit.store import JobRun

        cfg = self.cfg
        with self.store.session() as s:
            jr = s.scalar(select(JobRun).where(JobRun.job_name == cfg.job, JobRun.run_date == self.date))
            resumed = jr is not None
            if jr is None:
                jr = JobRun(job_name=cfg.job, run_date=self.date, status="running", run_names=[])
                s.add(jr)
            else:
                jr.status = "running"
        log.info("%s job run %s %s", "resuming" if resumed else "starting", cfg.job, self.date)
        self.echo(f"job {cfg.job} {self.date}: {'resuming' if resumed else 'starting'}")
        try:
            with self._timed("import_s"):
                self._import_sets()
            with contextlib.ExitStack() as stack:
                self._start_targets(stack)
                self._collect_all()
            summary = self._summarise(resumed)
            report_dir = cfg.output_dir / f"{cfg.job}-{self.date}"
            from audit.reports.run_report import write_run_reports

            with self._timed("reports_s"):
                files = write_run_reports(summary, report_dir, store=self.store, ngrams=cfg.ngrams)
            summary["files"] = files
            self.timings["total_s"] = time.monotonic() - self._t0
            summary["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
            self._deliver(summary)
            # the report files already carry the alerts; rewrite summary.json with the delivery status
            from audit.reports.run_report import write_summary_json

            write_summary_json(summary, report_dir)
        except BaseException:
            with self.store.session() as s:
                row = s.scalar(select(JobRun).where(JobRun.job_name == cfg.job, JobRun.run_date == self.date))
                row.status = "failed"
                row.run_names = [e.run_name(cfg.job, self.date) for e in self.entries]
            raise
        with self.store.session() as s:
            row = s.scalar(select(JobRun).where(JobRun.job_name == cfg.job, JobRun.run_date == self.date))
            row.status = "finished"
            row.run_names = [e.run_name(cfg.job, self.date) for e in self.entries]
            row.summary = _json_safe(summary)
            row.finished_at = dt.datetime.now(dt.timezone.utc)
        result = JobResult(summary["exit_code"], summary, report_dir)
        for a in summary["alerts"]:
            result.messages.append(f"ALERT: {a['message']}")
        for t in summary["failures"]["exceeded"]:
            result.messages.append(f"TARGET FAILURES: {t['target']}: {t['failed']}/{t['requested']} requests failed "
                                   f"({100 * t['failure_rate']:.1f}% > {100 * cfg.alerts.max_failure_rate:.1f}%)")
        result.messages.append(f"report: {report_dir / 'report.html'}")
        return result

    def _import_sets(self) -> None:
        from audit.prompts import import_prompts

        for s in self.cfg.prompt_sets:
            r = import_prompts(self.store, s.path, s.name)
            log.info("prompt set %s: %d added, %d already present (%s)", s.name, r.added, r.skipped, s.path)
        c = self.cfg.contrast
        if c.enabled:
            r = import_prompts(self.store, c.path, c.set_name)
            log.info("contrast set %s: %d added, %d already present (%s)", c.set_name, r.added, r.skipped, c.path)

    def _start_targets(self, stack: contextlib.ExitStack) -> None:
        from audit.targets import add_target
        from audit.targets.loopback import LoopbackServer

        self.token_targets: set[str] = set()
        for t in self.cfg.targets:
            refusal_tokens = t.refusal_tokens
            if t.builtin == "replay":
                from audit.targets.replay import make_app

                opts = dict(t.options)
                app = make_app(opts.pop("data_path", None), **opts)
                server = stack.enter_context(LoopbackServer(app))
                provider, base_url, model = "openai", server.base_url + "/v1", opts.get("model_name") or "gpt-3.5-turbo-replay"
                log.info("started built-in replay target %s at %s", t.name, server.base_url)
            elif t.builtin == "refusal-token-sim":
                from audit.targets.refusal_token_sim import SimConfig, make_app

                sim_cfg = SimConfig.from_dict(dict(t.options))
                server = stack.enter_context(LoopbackServer(make_app(sim_cfg)))
                provider, base_url, model = "openai", server.base_url + "/v1", sim_cfg.model
                refusal_tokens = refusal_tokens or sim_cfg.refusal_tokens()
                log.info("started built-in refusal-token simulator %s at %s", t.name, server.base_url)
            else:
                provider, base_url, model = t.provider, t.base_url, t.model
            if t.builtin:
                stack.callback(log.info, "stopped built-in target %s", t.name)
            add_target(self.store, t.name, provider, base_url, model, t.api_key_env, t.params, refusal_tokens, replace=True)
            if refusal_tokens:
                self.token_targets.add(t.name)

    def _collect_kwargs(self, target: str) -> dict:
        b = self.cfg.budget
        logprobs = b.logprobs
        if logprobs is None and target in getattr(self, "token_targets", set()) and self.cfg.refusal_tokens_enabled:
            logprobs = 5
        return dict(samples=b.samples, temperature=b.temperature, concurrency=b.concurrency, rpm=b.rpm, tpm=b.tpm,
                    max_requests=b.max_requests, max_tokens_total=b.max_tokens_total, use_cache=b.use_cache,
                    logprobs=logprobs, max_tokens=b.max_tokens, progress=self.progress)

    def _targets_for(self, names: list[str] | None) -> list[str]:
        audited = [t.name for t in self.cfg.audited_targets]
        return audited if names is None else [n for n in audited if n in names]

    def _collect_all(self) -> None:
        cfg = self.cfg
        selected: dict[str, list[tuple[int, str, str | None]]] = {}
        for s in cfg.prompt_sets:
            selected[s.name] = select_prompts(self.store, s.name, max_prompts=s.max_prompts, seed=cfg.seed)
            for t in self._targets_for(s.targets):
                self._run(RunEntry(t, s.name, None, s.name, [p[0] for p in selected[s.name]]))
        if cfg.contrast.enabled:
            c = cfg.contrast
            ids = [p[0] for p in select_prompts(self.store, c.set_name, max_prompts=c.max_prompts, seed=cfg.seed)]
            for t in self._targets_for(c.targets):
                self._run(RunEntry(t, c.set_name, "contrast", c.set_name, ids))
        if cfg.tense.enabled:
            self._tense_probe(selected)

    def _tense_probe(self, selected) -> None:
        from audit import probes

        cfg, tp = self.cfg, self.cfg.tense
        sets = tp.sets or [s.name for s in cfg.prompt_sets if s.harmful]
        self.tense_results: list[dict] = []
        for set_name in sets:
            spec = next(s for s in cfg.prompt_sets if s.name == set_name)
            originals = select_prompts(self.store, set_name, max_prompts=tp.max_prompts, seed=cfg.seed,
                                       categories=tp.categories, within=[p[0] for p in selected[set_name]])
            targets = [t for t in self._targets_for(tp.targets) if t in self._targets_for(spec.targets)]
            if not originals or not targets:
                log.warning("tense probe: nothing to do for set %s (no prompts or no target)", set_name)
                continue
            for tense in tp.tenses:
                derived = f"{set_name}.tense-{tense}"
                if tp.reformulator:
                    entry = RunEntry(tp.reformulator, f"{set_name}.reformulate-{tense}", f"reformulator-{tense}",
                                     f"{set_name}.reformulate-{tense}", [])
                    kwargs = self._collect_kwargs(tp.reformulator)
                    for k in ("samples", "temperature", "logprobs"):
                        kwargs.pop(k)
                    kwargs["use_cache"] = True
                    try:
                        ref = probes.model_reformulations(
                            self.store, originals, tense, tp.k, reformulator=tp.reformulator,
                            run_name=entry.run_name(cfg.job, self.date), request_set=entry.prompt_set,
                            temperature=tp.reformulator_temperature, collect_kwargs=kwargs)
                    except Exception as exc:  # noqa: BLE001 - fall back, and say so
                        log.error("reformulator %s failed (%s: %s); using rule-based rewrites", tp.reformulator, type(exc).__name__, exc)
                        ref = probes.rule_reformulations(originals, tense, tp.k)
                        ref.methods["rule-fallback"] = ref.methods.pop("rule")
                    self.entries.append(entry)
                    self.collect_info[entry.run_name(cfg.job, self.date)] = {"reformulator": True}
                else:
                    ref = probes.rule_reformulations(originals, tense, tp.k)
                ids = probes.ensure_prompts(self.store, derived, ref.records,
                                            description=f"{tense}-tense rewrites of {set_name} (tense probe)")
                for t in targets:
                    orig = RunEntry(t, set_name, None, set_name, [])
                    entry = RunEntry(t, derived, f"tense-{tense}", derived, sorted(set(ids)), source_set=set_name)
                    self._run(entry)
                    rows = probes.attack_success(self.store, orig.run_name(cfg.job, self.date),
                                                 entry.run_name(cfg.job, self.date), entry.prompt_ids)
                    self.tense_results.append({
                        "target": t, "prompt_set": set_name, "tense": tense, "k": tp.k,
                        "attempts_per_prompt": tp.k * cfg.budget.samples,
                        "rewrites": dict(ref.methods), "reformulator": tp.reformulator,
                        "original_run": orig.run_name(cfg.job, self.date),
                        "probe_run": entry.run_name(cfg.job, self.date), "by_category": rows,
                    })

    def _run(self, entry: RunEntry) -> None:
        from audit.collect import collect

        name = entry.run_name(self.cfg.job, self.date)
        self.entries.append(entry)
        info: dict[str, Any] = {}
        try:
            with self._timed("collect_s"):
                summary = collect(self.store, run_name=name, set_name=entry.prompt_set, target_name=entry.target,
                                  prompt_ids=entry.prompt_ids, **self._collect_kwargs(entry.target))
            info["collect"] = summary.to_dict()
            log.info("run %s: %d answered, %d cached, %d errors, %d already done, %d not reached",
                     name, summary.answered, summary.cached, summary.errors, summary.already_done, summary.remaining)
        except Exception as exc:  # noqa: BLE001 - a failing target is reported, not fatal to the job
            log.error("run %s: collection failed: %s: %s", name, type(exc).__name__, exc)
            info["collect_error"] = f"{type(exc).__name__}: {exc}"
        self.collect_info[name] = info
        # a labelling failure (e.g. no classifier) would make every rate silently empty: it is fatal
        with self._timed("label_s"):
            n = self._label(name)
        info["labelled"] = n
        log.info("run %s: %d responses labelled", name, n)

    def _label(self, run_name: str) -> int:
        from sqlalchemy import select

        from audit.labeling import label_run
        from audit.store import Run

        with self.store.session() as s:
            if s.scalar(select(Run.id).where(Run.name == run_name)) is None:
                return 0
        if self.classifier is None:
            self.classifier = _load_classifier(self.cfg.classifier_model)
        return label_run(self.store, run_name, classifier=self.classifier, use_cascade=self.cfg.classifier_cascade)

    # -- results
    def _summarise(self, resumed: bool) -> dict:
        from sqlalchemy import func, select

        from audit.drift import compare_rates
        from audit.rates import category_rates
        from audit.store import JobRun, Response, Run

        cfg, date = self.cfg, self.date
        runs_out, drift_rows, failures_by_target = [], [], {}
        with self.store.session() as s:
            previous = list(s.scalars(
                select(JobRun)
                .where(JobRun.job_name == cfg.job, JobRun.run_date < date, JobRun.status == "finished")
                .order_by(JobRun.run_date.desc())
            ))
            for e in self.entries:
                name = e.run_name(cfg.job, date)
                run = s.scalar(select(Run).where(Run.name == name))
                info = self.collect_info.get(name, {})
                n_keys = len(e.prompt_ids) * cfg.budget.samples if e.prompt_ids else None
                stored = errors = 0
                rates = []
                if run is not None:
                    stored, errors = s.execute(
                        select(func.count(Response.id),
                               func.count(Response.id).filter(Response.error.is_not(None), Response.text.is_(None)))
                        .where(Response.run_id == run.id)
                    ).one()
                    if not e.probe or not e.probe.startswith("reformulator"):
                        rates = [r.as_dict() for r in category_rates(s, run.id)]
                requested = n_keys if n_keys is not None else stored
                failed = errors + max(0, (requested or 0) - stored)
                if "collect_error" in info and requested == 0:
                    failed = requested = max(1, requested)
                rec = {
                    "run_name": name, "target": e.target, "prompt_set": e.prompt_set, "probe": e.probe,
                    "source_set": e.source_set,
                    "status": ("missing" if run is None else "complete" if failed == 0 else
                               "with_errors" if stored >= (requested or 0) else "incomplete"),
                    "prompts": len(e.prompt_ids) if e.prompt_ids else None, "requested": requested,
                    "responses": stored, "failed": failed,
                    "failure_rate": (failed / requested) if requested else 0.0,
                    "rates": rates, "previous_run": None,
                }
                for k in ("collect_error", "label_error"):
                    if k in info:
                        rec[k] = info[k]
                if "collect" in info:
                    rec["collect"] = {k: info["collect"][k] for k in ("answered", "cached", "errors", "already_done", "requests", "retries", "stopped_reason", "error_kinds", "elapsed_s")}
                agg = failures_by_target.setdefault(e.target, [0, 0])
                agg[0] += failed
                agg[1] += requested or 0
                # drift against the same run of the most recent earlier date of this job
                if run is not None and rates and not (e.probe or "").startswith("reformulator"):
                    for prev in previous:
                        prev_name = e.run_name(cfg.job, prev.run_date)
                        if prev_name not in (prev.run_names or []):
                            continue
                        prun = s.scalar(select(Run).where(Run.name == prev_name))
                        if prun is None:
                            continue
                        rec["previous_run"] = prev_name
                        rows = compare_rates(name, prev_name, category_rates(s, run.id), category_rates(s, prun.id),
                                             alpha=cfg.alerts.alpha, min_change=cfg.alerts.min_change)
                        for r in rows:
                            d = r.as_dict()
                            d.update(target=e.target, prompt_set=e.prompt_set, probe=e.probe)
                            drift_rows.append((d, r))
                        break
                runs_out.append(rec)
        with self._timed("tokens_s"):
            tokens = self._tokens()
        for rec in runs_out:
            rec["tokens"] = tokens.get(rec["run_name"])
        alerts = [dict(d, message=r.message()) for d, r in drift_rows if r.alert]
        exceeded = [
            {"target": t, "failed": f, "requested": n, "failure_rate": f / n}
            for t, (f, n) in sorted(failures_by_target.items()) if n and f / n > cfg.alerts.max_failure_rate
        ]
        exit_code = EXIT_TARGET_FAILURES if exceeded else EXIT_ALERT if alerts else EXIT_OK
        contrast = []
        for rec in runs_out:
            if rec["probe"] == "contrast":
                total = next((r for r in rec["rates"] if r["category"] == "(all)"), None)
                contrast.append({"target": rec["target"], "run_name": rec["run_name"], "prompt_set": rec["prompt_set"],
                                 "over_refusal_rate": total["rate"] if total else None,
                                 "ci": [total["ci_low"], total["ci_high"]] if total else None,
                                 "n": total["n"] if total else 0, "by_category": rec["rates"]})
        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "job": cfg.job,
            "run_date": date,
            "config_path": str(cfg.path.resolve()),
            "store": redact_url(self.url),
            "resumed": resumed,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "exit_code": exit_code,
            "status": {EXIT_OK: "ok", EXIT_ALERT: "alert", EXIT_TARGET_FAILURES: "target_failures"}[exit_code],
            "classifier": self.classifier_info(),
            "budget": {k: getattr(cfg.budget, k) for k in Budget.__dataclass_fields__},
            "alert_rules": {"min_change": cfg.alerts.min_change, "alpha": cfg.alerts.alpha,
                            "max_failure_rate": cfg.alerts.max_failure_rate,
                            "webhook_url_env": cfg.alerts.webhook_url_env},
            "runs": runs_out,
            "probes": {"tense": getattr(self, "tense_results", []), "contrast": contrast},
            "drift": [d for d, _ in drift_rows],
            "alerts": alerts,
            "failures": {"max_failure_rate": cfg.alerts.max_failure_rate,
                         "by_target": [{"target": t, "failed": f, "requested": n, "failure_rate": (f / n) if n else 0.0}
                                       for t, (f, n) in sorted(failures_by_target.items())],
                         "exceeded": exceeded},
            "webhook": None,
            "files": {},
        }

    def classifier_info(self) -> dict:
        c = self.classifier
        info = {"model": self.cfg.classifier_model}
        if c is not None:
            for attr in ("name", "version", "version_"):
                v = getattr(c, attr, None)
                if isinstance(v, str):
                    info[attr.rstrip("_")] = v
        return info

    def _tokens(self) -> dict[str, Any]:
        """``audit.tokens.compare`` per run of a target with refusal tokens (expected vs observed rates)."""
        out: dict[str, Any] = {}
        if not self.cfg.refusal_tokens_enabled or not getattr(self, "token_targets", None):
            return out
        try:
            from audit.tokens import compare
        except ImportError as exc:
            log.warning("refusal-token comparison unavailable: %s", exc)
            return out
        for e in self.entries:
            if e.target not in self.token_targets or (e.probe or "").startswith("reformulator"):
                continue
            name = e.run_name(self.cfg.job, self.date)
            try:
                out[name] = compare(self.store, name, thresholds=self.cfg.refusal_token_thresholds)
            except Exception as exc:  # noqa: BLE001 - a token audit problem must not hide the refusal audit
                log.error("refusal-token comparison of %s failed: %s: %s", name, type(exc).__name__, exc)
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    def _deliver(self, summary: dict) -> None:
        from audit.drift import deliver_webhook

        if not summary["alerts"]:
            summary["webhook"] = None
            return
        payload = {
            "job": summary["job"], "run_date": summary["run_date"], "status": summary["status"],
            "alerts": summary["alerts"], "report": summary["files"].get("report_html"),
        }
        status = deliver_webhook(self.cfg.alerts.webhook_url_env, payload)
        summary["webhook"] = status
        log.info("webhook: %s", status)


SUMMARY_SCHEMA_VERSION = 1


def _load_classifier(model: str):
    if model == "default":
        from classifiers import load_default_response_classifier

        return load_default_response_classifier()
    from classifiers import load_response_classifier

    return load_response_classifier(model)


def _json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf as ``None`` and paths as strings (valid JSON for the DB and files)."""
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
