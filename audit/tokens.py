"""Refusal-token audit: do the refusal rates a model *says* (its refusal-token probabilities) match the
rates it *shows* (labels of its actual answers)?

Data flow: stored first-token logprobs (``Response.logprobs``) + the target's token configuration
(``Target.refusal_tokens``) → a refusal probability per response (:func:`read_refusal_probability`) →
per category the expected rate (sampling mode: mean of ``p``; threshold mode: share with
``p >= t_c``) next to the observed rate from effective labels → interval estimates, a test of the
difference, calibration metrics each next to its noise floor, reliability diagrams
(:func:`compare`). Thresholds for wanted rates: :func:`solve_thresholds`. Recalibration: :func:`recalibrate`.

Reading rules:

* a token absent from the top-K list gets an **upper bound** (the smaller of the K-th listed
  probability and the unlisted mass), flagged ``upper_bound``; it is never read as zero;
* a token string split into several sub-tokens (``"["``, ``"ref"``, ``"use"``, ``"]"``) is read at the
  first sub-token that distinguishes refusal from response: ``P(shared prefix) x P(sub-token)``, with
  a note saying so;
* a target without refusal tokens may configure ``prefix_tokens`` (e.g. ``"I"``, ``"Sorry"``,
  ``"As"``): their summed first-token probability is a *proxy* refusal signal (``signal =
  "prefix-proxy"``);
* responses without logprobs (a server that does not return them) fall back to the calibrated prompt
  classifier's forecast of the prompt — a stand-in, labelled ``source = "prompt-classifier"``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.stats import bootstrap_interval, calibration_noise_floor, holm_adjust, two_proportion_test, wilson_interval

ALL = "(all)"
SOURCE_LOGPROBS = "logprobs"
SOURCE_PROMPT = "prompt-classifier"


class TokenAuditError(ValueError):
    """The audit cannot run as asked (unknown run, no probabilities, bad thresholds, ...)."""


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TokenConfig:
    """A target's refusal-token configuration (``Target.refusal_tokens``)."""

    refuse: str | None = None
    respond: str | None = None
    categories: dict[str, str] = field(default_factory=dict)
    prefix_tokens: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> TokenConfig | None:
        if not raw:
            return None
        if not isinstance(raw, dict):
            raise TokenAuditError(f"refusal_tokens: expected an object, got {type(raw).__name__}")
        cats = raw.get("categories") or {}
        if not isinstance(cats, dict) or not all(isinstance(v, str) and v for v in cats.values()):
            raise TokenAuditError("refusal_tokens.categories: expected {category: token string}")
        prefix = raw.get("prefix_tokens") or []
        if not isinstance(prefix, list) or not all(isinstance(t, str) and t.strip() for t in prefix):
            raise TokenAuditError("refusal_tokens.prefix_tokens: expected a list of non-empty strings")
        cfg = cls(raw.get("refuse") or None, raw.get("respond") or None, dict(cats), tuple(prefix))
        if not cfg.refusal_strings and not cfg.prefix_tokens:
            raise TokenAuditError("refusal_tokens: needs a refuse token, category tokens or prefix_tokens")
        return cfg

    @property
    def refusal_strings(self) -> list[str]:
        out = [self.refuse] if self.refuse else []
        return out + [t for t in self.categories.values() if t not in out]

    @property
    def signal(self) -> str:
        return "refusal-token" if self.refusal_strings else "prefix-proxy"


@dataclass
class TokenReading:
    """The refusal probability read from one response's logprobs."""

    p_refuse: float
    upper_bound: bool = False
    p_respond: float | None = None
    position: int = 0
    split: bool = False
    signal: str = "refusal-token"
    tokens: dict[str, float] = field(default_factory=dict)
    bounded_tokens: list[str] = field(default_factory=list)
    note: str | None = None


def _candidates(item: dict[str, Any]) -> tuple[dict[str, float], float | None, float]:
    """Candidate tokens at one position: ``{token: prob}`` (top list + the generated token), the
    smallest listed probability (None if no list), and the listed mass."""
    cands: dict[str, float] = {}
    for t in item.get("top_logprobs") or []:
        cands[t["token"]] = cands.get(t["token"], 0.0) + math.exp(float(t["logprob"]))
    listed = sum(cands.values())
    kth = min(cands.values()) if cands else None
    tok = item.get("token")
    if tok is not None and tok not in cands:
        cands[tok] = math.exp(float(item.get("logprob", 0.0)))
        listed += cands[tok]
    return cands, kth, min(1.0, listed)


def _unlisted_bound(kth: float | None, listed: float) -> float:
    rest = max(0.0, 1.0 - listed)
    return rest if kth is None else min(kth, rest)


def read_refusal_probability(logprobs: list[dict[str, Any]] | None, cfg: TokenConfig) -> TokenReading | None:
    """Refusal probability of one response from its stored logprobs; None if there are none."""
    if not logprobs:
        return None
    if not cfg.refusal_strings:
        return _read_prefix(logprobs[0], cfg)
    strings: dict[str, str] = {s: "R" for s in cfg.refusal_strings}
    if cfg.respond:
        strings[cfg.respond] = "A"

    def consistent(ext: str, _first: bool) -> set[str]:
        ext = ext.lstrip()  # token strings never start with whitespace; generated text may
        if not ext:
            return set(strings)
        return {s for s in strings if s.startswith(ext) or ext.startswith(s)}

    def classes(ss: set[str]) -> set[str]:
        return {strings[s] for s in ss}

    mass = {"R": 0.0, "A": 0.0}
    per_token: dict[str, float] = defaultdict(float)
    generated = ""
    log_prefix = 0.0
    for i, item in enumerate(logprobs):
        cands, kth, listed = _candidates(item)
        scale = math.exp(log_prefix)
        gen_tok = item.get("token", "")
        gen_set = consistent(generated + gen_tok, not generated)
        shared = len(classes(gen_set)) > 1
        partial = False
        for t, m in cands.items():
            if shared and t == gen_tok:
                continue
            ss = consistent(generated + t, not generated)
            if not ss or (len(classes(ss)) > 1):
                continue  # not a token of ours, or an alternative that does not distinguish
            mass[classes(ss).pop()] += scale * m
            if len(ss) == 1:
                per_token[next(iter(ss))] += scale * m
            ext = (generated + t).lstrip()
            partial = partial or any(s != ext and s.startswith(ext) for s in ss)
        if shared and i + 1 < len(logprobs):
            generated += gen_tok
            log_prefix += float(item.get("logprob", 0.0))
            continue
        # This is the first distinguishing position (or the last one we have).
        split = i > 0 or partial
        bound = scale * _unlisted_bound(kth, listed)
        upper = mass["R"] == 0.0
        p_refuse = bound if upper else mass["R"]
        bounded = [s for s in cfg.refusal_strings if s not in per_token]
        tokens = {s: per_token[s] for s in per_token}
        note = None
        if split:
            sub = gen_tok if not shared else ""
            note = (f"token strings are split into sub-tokens; read the first distinguishing sub-token "
                    f"at position {i}" + (f" (generated {sub!r})" if sub else ""))
        if shared:
            note = (note + "; " if note else "") + "no position distinguishes refusal from response"
        if upper:
            note = (note + "; " if note else "") + "refusal token not in top-K: upper bound"
        p_respond = mass["A"] if mass["A"] > 0 else None
        return TokenReading(min(1.0, p_refuse), upper, p_respond, i, split, "refusal-token", tokens, bounded, note)
    return None


def _read_prefix(item: dict[str, Any], cfg: TokenConfig) -> TokenReading:
    cands, kth, listed = _candidates(item)
    wanted = set(cfg.prefix_tokens)
    tokens: dict[str, float] = defaultdict(float)
    for t, m in cands.items():
        if t.strip() in wanted:
            tokens[t.strip()] += m
    if tokens:
        p = sum(tokens.values())
        missing = [t for t in cfg.prefix_tokens if t not in tokens]
        return TokenReading(min(1.0, p), False, None, 0, False, "prefix-proxy", dict(tokens), missing,
                            "proxy: summed first-token probability of refusal-prefix tokens")
    return TokenReading(_unlisted_bound(kth, listed), True, None, 0, False, "prefix-proxy", {}, list(cfg.prefix_tokens),
                        "proxy: no refusal-prefix token in top-K: upper bound")


# ----------------------------------------------------------------------------- rates and thresholds
def expected_indicators(p: np.ndarray, threshold: float | None) -> np.ndarray:
    """Per-prompt expected refusal: ``p`` itself (sampling mode) or ``p >= threshold`` (threshold mode)."""
    p = np.asarray(p, dtype=float)
    return p if threshold is None else (p >= threshold).astype(float)


def expected_rate(p, threshold: float | None = None) -> float:
    """Expected refusal rate: mean of ``p`` (sampling mode) or share with ``p >= threshold``."""
    p = np.asarray(p, dtype=float)
    return float(expected_indicators(p, threshold).mean()) if p.size else float("nan")


def threshold_curve(p, grid=None) -> tuple[np.ndarray, np.ndarray]:
    """Threshold → expected refusal rate (threshold mode) on a grid of thresholds in [0, 1]."""
    p = np.sort(np.asarray(p, dtype=float))
    grid = np.linspace(0, 1, 201) if grid is None else np.asarray(grid, dtype=float)
    rates = 1.0 - np.searchsorted(p, grid, side="left") / max(p.size, 1)
    return grid, rates


def solve_threshold(p, want: float) -> float:
    """The threshold ``t`` whose share ``mean(p >= t)`` is closest to ``want`` (between two
    neighbouring scores, so that it generalises; ties are resolved towards ``want``)."""
    if not 0.0 <= want <= 1.0:
        raise TokenAuditError(f"wanted rate {want} is not in [0, 1]")
    p = np.sort(np.asarray(p, dtype=float))[::-1]
    n = p.size
    if n == 0:
        raise TokenAuditError("no probabilities to solve a threshold on")
    k = int(round(want * n))
    if k <= 0:
        return float(np.nextafter(p[0], np.inf))
    if k >= n:
        return float(p[-1])
    hi, lo = p[k - 1], p[k]
    if hi > lo:
        return float((hi + lo) / 2)
    options = [float(hi), float(np.nextafter(hi, np.inf))]
    return min(options, key=lambda t: abs(expected_rate(p, t) - want))


# ----------------------------------------------------------------------------- comparison on arrays
@dataclass
class Group:
    """The paired data of one category: refusal probability ``p`` and observed refusal ``y``."""

    p: np.ndarray
    y: np.ndarray
    sources: list[str] = field(default_factory=list)
    upper: int = 0
    split: int = 0
    signal: str = "refusal-token"
    notes: list[str] = field(default_factory=list)
    unlabelled: int = 0
    no_probability: int = 0

    @property
    def source(self) -> str:
        kinds = sorted(set(self.sources)) or [SOURCE_LOGPROBS]
        return kinds[0] if len(kinds) == 1 else "+".join(kinds)


class _Metric:
    """A calibration metric of ``classifiers.calibration`` with a vectorised ``batch(ys, p)`` form for
    the noise-floor simulation (the predictions ``p`` are fixed, so the bins are too). The two forms
    are checked against each other in the tests."""

    def __init__(self, name: str, n_bins: int):
        from classifiers import calibration as cal

        self.name, self.n_bins = name, n_bins
        self._fn = {
            "ece": lambda y, p: cal.expected_calibration_error(y, p, n_bins, "uniform"),
            "ece_mass": lambda y, p: cal.expected_calibration_error(y, p, n_bins, "quantile"),
            "mce": lambda y, p: cal.max_calibration_error(y, p, n_bins, "uniform"),
            "brier": cal.brier_score,
            "nll": cal.negative_log_likelihood,
        }[name]

    def __call__(self, y, p) -> float:
        return self._fn(y, p)

    def _bins(self, p: np.ndarray, strategy: str) -> np.ndarray:
        if strategy == "uniform":
            return np.minimum((p * self.n_bins).astype(int), self.n_bins - 1)
        edges = np.quantile(p, np.linspace(0, 1, self.n_bins + 1))
        return np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, self.n_bins - 1)

    def batch(self, ys: np.ndarray, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.name == "brier":
            return np.mean((p[None, :] - ys) ** 2, axis=1)
        if self.name == "nll":
            pc = np.clip(p, 1e-12, 1 - 1e-12)
            return -np.mean(ys * np.log(pc) + (1 - ys) * np.log(1 - pc), axis=1)
        ids = self._bins(p, "quantile" if self.name == "ece_mass" else "uniform")
        counts = np.bincount(ids, minlength=self.n_bins).astype(float)
        keep = counts > 0
        mean_p = np.bincount(ids, weights=p, minlength=self.n_bins)[keep] / counts[keep]
        onehot = np.zeros((p.size, self.n_bins))
        onehot[np.arange(p.size), ids] = 1.0
        frac = (ys @ onehot)[:, keep] / counts[keep]
        gap = np.abs(frac - mean_p[None, :])
        if self.name == "mce":
            return gap.max(axis=1)
        return (gap * counts[keep]).sum(axis=1) / counts[keep].sum()


METRICS = ("ece", "ece_mass", "mce", "brier", "nll")


def _metric_fns(n_bins: int) -> dict[str, _Metric]:
    return {name: _Metric(name, n_bins) for name in METRICS}


def compare_groups(
    groups: dict[str, Group],
    thresholds: dict[str, float] | None = None,
    *,
    n_boot: int = 2000,
    n_sim: int = 500,
    n_bins: int = 10,
    alpha: float = 0.05,
    seed: int = 0,
    metrics: tuple[str, ...] | None = None,
    include_total: bool = True,
) -> list[dict[str, Any]]:
    """Per category (and ``(all)`` last): observed vs expected refusal rate and calibration.

    ``flagged`` is True when the rates differ (two-proportion test) or the ECE exceeds its noise
    floor (Monte-Carlo calibration test), at family level ``alpha`` (Bonferroni over the two tests).
    """
    fns = _metric_fns(n_bins)
    if metrics is not None:
        fns = {k: v for k, v in fns.items() if k in metrics or k == "ece"}
    rows: list[dict[str, Any]] = []
    items = [(c, g) for c, g in sorted(groups.items()) if len(g.p)]
    if include_total and items:
        total = Group(
            np.concatenate([g.p for _, g in items]),
            np.concatenate([g.y for _, g in items]),
            [s for _, g in items for s in (g.sources or [SOURCE_LOGPROBS])],
            sum(g.upper for _, g in items),
            sum(g.split for _, g in items),
            items[0][1].signal,
            sorted({nt for _, g in items for nt in g.notes}),
            sum(g.unlabelled for _, g in items),
            sum(g.no_probability for _, g in items),
        )
        total_e = np.concatenate([expected_indicators(g.p, _threshold_for(thresholds, c)) for c, g in items])
    todo = [(c, g, False) for c, g in items] + ([(ALL, total, True)] if include_total and items else [])
    for idx, (cat, g, is_total) in enumerate(todo):
        p, y = np.asarray(g.p, dtype=float), np.asarray(g.y, dtype=float)
        n, k = int(p.size), int(y.sum())
        t = None if is_total else _threshold_for(thresholds, cat)
        e = total_e if is_total else expected_indicators(p, t)
        exp_rate = float(e.mean())
        if thresholds is None:
            exp_ci = bootstrap_interval(e, confidence=1 - alpha, n_resamples=n_boot, seed=seed + idx)
            ci_method = "bootstrap"
        else:
            # The expected indicators are 0/1 here: a percentile bootstrap of their mean is the Wald
            # interval, which under-covers near 0 and 1 (measured: 91% at a true 0.96, n=200); the
            # Wilson interval of the same share does not.
            exp_ci = wilson_interval(int(round(e.sum())), n, confidence=1 - alpha)
            ci_method = "wilson"
        obs_ci = wilson_interval(k, n, confidence=1 - alpha)
        diff, p_value = two_proportion_test(k, n, exp_rate * n, n)
        var = float(np.sum(p * (1 - p)))
        p_paired = None
        if thresholds is None and var > 0:
            from scipy.stats import norm

            p_paired = float(2 * norm.sf(abs(k - p.sum()) / math.sqrt(var)))
        observed = {name: fn(y, p) for name, fn in fns.items()}
        floor = calibration_noise_floor(p, fns, observed, n_sim=n_sim, confidence=1 - alpha, seed=seed + 1000 + idx)
        cal_p = floor["ece"]["p_value"]
        row: dict[str, Any] = {
            "category": cat,
            "n": n,
            "observed_rate": k / n,
            "observed_ci": list(obs_ci),
            "expected_rate": exp_rate,
            "expected_ci": list(exp_ci),
            "p_value": p_value,
            "ece": observed["ece"],
            "source": g.source,
            "mode": "sampling" if thresholds is None else "threshold",
            "expected_ci_method": ci_method,
            "threshold": t,
            "difference": diff,
            "p_value_paired": p_paired,
            "calibration_p_value": cal_p,
            "signal": g.signal,
            "n_upper_bound": g.upper,
            "n_split_token": g.split,
            "n_unlabelled": g.unlabelled,
            "n_no_probability": g.no_probability,
            "notes": g.notes,
        }
        for name in fns:
            row[name] = observed[name]
            row[f"{name}_floor"] = floor[name]["mean"]
            row[f"{name}_floor_q95"] = floor[name]["q"]
        row["flagged"] = bool(min(p_value, cal_p) < alpha / 2)
        rows.append(row)
    cats = rows[: len(items)]
    for r, adj in zip(cats, holm_adjust([r["p_value"] for r in cats])):
        r["p_value_holm"] = adj
    for r in rows:
        r.setdefault("p_value_holm", r["p_value"])
    return rows


def _threshold_for(thresholds: dict[str, float] | None, category: str) -> float | None:
    if thresholds is None:
        return None
    if category in thresholds:
        return float(thresholds[category])
    if "*" in thresholds:
        return float(thresholds["*"])
    raise TokenAuditError(f"thresholds: no threshold for category {category!r} (add it, or a '*' default)")


# ----------------------------------------------------------------------------- reading a run
def _run_and_config(session, run_name: str):
    from audit.rates import run_by_name

    run = run_by_name(session, run_name)
    if run is None:
        raise TokenAuditError(f"no run named {run_name!r}")
    return run, TokenConfig.from_json(run.target.refusal_tokens)


def _prompt_classifier_probs(
    session, prompts: dict[int, str], model_dir: str | Path | None, categories: dict[int, str | None] | None = None
) -> dict[int, float]:
    """Calibrated prompt-classifier P(refusal) per prompt: the classifier in ``model_dir`` if given;
    else stored forecasts (``PromptPrediction``, newest per prompt), then a default classifier."""
    from sqlalchemy import select

    from audit.store import PromptPrediction

    out: dict[int, float] = {}
    if prompts and model_dir is None:
        q = (
            select(PromptPrediction.prompt_id, PromptPrediction.p_refusal)
            .where(PromptPrediction.prompt_id.in_(list(prompts)))
            .order_by(PromptPrediction.id)
        )
        for pid, p in session.execute(q):
            out[pid] = float(p)
    missing = [pid for pid in prompts if pid not in out]
    if missing:
        clf = _load_prompt_classifier(model_dir)
        if clf is None:
            raise TokenAuditError(
                "responses have no logprobs and there is no prompt-classifier forecast for their prompts: "
                "collect with --logprobs, store forecasts first, or pass a prompt model directory"
            )
        texts = [prompts[pid] for pid in missing]
        cats = [(categories or {}).get(pid) for pid in missing]
        try:
            probs = np.asarray(clf.predict_proba(texts, categories=cats))[:, 1]
        except TypeError:  # a classifier without per-category calibration
            probs = np.asarray(clf.predict_proba(texts))[:, 1]
        out.update({pid: float(p) for pid, p in zip(missing, probs)})
    return out


def _load_prompt_classifier(model_dir):
    try:
        import classifiers.prompt as cp
    except ImportError:
        return None
    if model_dir is not None:
        return cp.PromptClassifier.load(model_dir)
    for name in ("load_default_prompt_classifier", "default_prompt_classifier"):
        loader = getattr(cp, name, None)
        if loader is not None:
            try:
                return loader()
            except (FileNotFoundError, OSError):
                return None
    return None


def load_groups(store, run_name: str, *, prompt_model_dir: str | Path | None = None) -> dict[str, Group]:
    """The paired ``(p, y)`` data of a run, per prompt category."""
    from sqlalchemy import select

    from audit.rates import effective_labels
    from audit.store import Prompt, Response

    with store.session() as session:
        run, cfg = _run_and_config(session, run_name)
        eff = effective_labels(run.id).subquery()
        q = (
            select(Response.id, Response.prompt_id, Response.logprobs, Response.text, Response.error,
                   Prompt.category, Prompt.text.label("prompt_text"), eff.c.refusal)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .outerjoin(eff, eff.c.response_id == Response.id)
            .where(Response.run_id == run.id)
            .order_by(Response.id)
        )
        rows = [r for r in session.execute(q).all() if not (r.error and r.text is None)]
        if not rows:
            raise TokenAuditError(f"run {run_name!r} has no responses")
        readings = {r.id: (read_refusal_probability(r.logprobs, cfg) if cfg else None) for r in rows}
        need_fallback = {r.prompt_id: r.prompt_text for r in rows if readings[r.id] is None}
        cats = {r.prompt_id: r.category for r in rows}
        fallback = _prompt_classifier_probs(session, need_fallback, prompt_model_dir, cats) if need_fallback else {}
    signal = cfg.signal if cfg else "none"
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {"p": [], "y": [], "src": [], "upper": 0, "split": 0,
                                                          "notes": set(), "unlabelled": 0, "noprob": 0})
    for r in rows:
        a = acc[r.category or "(none)"]
        if r.refusal is None:
            a["unlabelled"] += 1
            continue
        rd = readings[r.id]
        if rd is not None:
            p, src = rd.p_refuse, SOURCE_LOGPROBS
            a["upper"] += int(rd.upper_bound)
            a["split"] += int(rd.split)
            if rd.note:
                a["notes"].add(rd.note)
        elif r.prompt_id in fallback:
            p, src = fallback[r.prompt_id], SOURCE_PROMPT
            a["notes"].add("no logprobs: prompt-classifier forecast used as a stand-in"
                           + ("" if cfg else " (target has no refusal-token configuration)"))
        else:
            a["noprob"] += 1
            continue
        a["p"].append(p)
        a["y"].append(int(bool(r.refusal)))
        a["src"].append(src)
    return {
        c: Group(np.array(a["p"], dtype=float), np.array(a["y"], dtype=int), a["src"], a["upper"], a["split"],
                 signal if SOURCE_LOGPROBS in a["src"] else "prompt-classifier", sorted(a["notes"]),
                 a["unlabelled"], a["noprob"])
        for c, a in acc.items()
    }


def read_thresholds(path: str | Path) -> dict[str, float]:
    """A thresholds file: JSON ``{category: threshold}`` (``"*"`` = default), or the output of
    ``tokens thresholds --out`` (``{"thresholds": {...}}``). Errors name file, line and field."""
    from audit.prompts import InputError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(path, None, None, f"cannot read: {e.strerror}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, "(json)", e.msg) from e
    if isinstance(raw, dict) and isinstance(raw.get("thresholds"), dict):
        raw = raw["thresholds"]
    if not isinstance(raw, dict) or not raw:
        raise InputError(path, 1, None, "expected a JSON object {category: threshold}")
    out = {}
    for cat, t in raw.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0 + 1e-9:
            line = next((i for i, ln in enumerate(text.splitlines(), 1) if json.dumps(cat) in ln), None)
            raise InputError(path, line, cat, f"threshold must be a number in [0, 1], got {t!r}")
        out[cat] = float(t)
    return out


def compare(
    store,
    run_name: str,
    thresholds: dict[str, float] | str | Path | None = None,
    *,
    plot_dir: str | Path | None = None,
    prompt_model_dir: str | Path | None = None,
    n_boot: int = 2000,
    n_sim: int = 500,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Compare calibrated (expected) with observed refusal rates per category of ``run_name``.

    Rows have the keys ``category, n, observed_rate, observed_ci, expected_rate, expected_ci,
    p_value, ece, source`` and more (MCE, Brier, NLL, ECE equal-mass, each with ``*_floor`` and
    ``*_floor_q95``; ``flagged``; ``mode``, ``threshold``, ``signal``, counts of upper bounds and split
    tokens). Without thresholds the expected rate is the sampling-mode mean. ``plot_dir`` gets
    reliability diagrams (pooled, and one panel per category) and threshold→rate curves (PNG).
    """
    if isinstance(thresholds, (str, Path)):
        thresholds = read_thresholds(thresholds)
    groups = load_groups(store, run_name, prompt_model_dir=prompt_model_dir)
    if not any(len(g.p) for g in groups.values()):
        raise TokenAuditError(f"run {run_name!r} has no labelled responses with a refusal probability "
                              "(label the run first)")
    rows = compare_groups(groups, thresholds, n_boot=n_boot, n_sim=n_sim, seed=seed)
    if plot_dir is not None:
        paths = write_plots(groups, plot_dir, run_name)
        for r in rows:
            r["reliability_diagram"] = str(paths.get(r["category"])) if r["category"] in paths else None
    return rows


def write_plots(groups: dict[str, Group], out_dir: str | Path, title: str) -> dict[str, Path]:
    """Reliability diagrams (``reliability_all.png`` for the pooled run, ``reliability_by_category.png``
    with one panel per category) and ``threshold_curves.png`` (threshold → expected rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from classifiers.calibration import expected_calibration_error, plot_reliability_diagram, reliability_curve

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [(c, g) for c, g in sorted(groups.items()) if len(g.p)]
    all_p = np.concatenate([g.p for _, g in items])
    all_y = np.concatenate([g.y for _, g in items])
    sources = sorted({s for _, g in items for s in g.sources})
    pooled = plot_reliability_diagram(all_y, all_p, out_dir / "reliability_all.png", n_bins=10,
                                      title=f"{title}: all (p = {'+'.join(sources)}, n={all_p.size})")
    paths: dict[str, Path] = {ALL: pooled}
    cols = min(3, len(items))
    rows_ = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.4 * rows_), squeeze=False)
    for ax, (cat, g) in zip(axes.ravel(), items):
        mean_p, frac, counts = reliability_curve(g.y, g.p, 10, "uniform")
        ece = expected_calibration_error(g.y, g.p, 10, "uniform")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.scatter(mean_p, frac, s=12 + 60 * counts / counts.max(), color="C0")
        ax.plot(mean_p, frac, color="C0", alpha=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{cat[:32]}\nn={len(g.p)}, ECE={ece:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    fig.supxlabel("P(refusal token)", fontsize=9)
    fig.supylabel("observed refusal rate", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "reliability_by_category.png", dpi=90)
    plt.close(fig)
    for cat, _ in items:
        paths[cat] = out_dir / "reliability_by_category.png"
    fig, ax = plt.subplots(figsize=(6, 4))
    for cat, g in items:
        grid, rates = threshold_curve(g.p)
        ax.plot(grid, rates, label=cat)
    ax.set_xlabel("threshold on P(refusal token)")
    ax.set_ylabel("expected refusal rate")
    ax.set_title(f"{title}: threshold → rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "threshold_curves.png", dpi=90)
    plt.close(fig)
    paths["threshold_curves"] = out_dir / "threshold_curves.png"
    return paths


def parse_wanted(spec: str) -> dict[str, float]:
    """``"cat a=0.2,cat b=30%"`` → ``{"cat a": 0.2, "cat b": 0.3}``."""
    out = {}
    for part in [s for s in spec.split(",") if s.strip()]:
        if "=" not in part:
            raise TokenAuditError(f"--want: expected category=rate, got {part.strip()!r}")
        cat, val = part.rsplit("=", 1)
        val = val.strip()
        try:
            rate = float(val[:-1]) / 100 if val.endswith("%") else float(val)
        except ValueError:
            raise TokenAuditError(f"--want: rate of {cat.strip()!r} is not a number: {val!r}") from None
        if not 0 <= rate <= 1:
            raise TokenAuditError(f"--want: rate of {cat.strip()!r} must be in [0, 1], got {val}")
        out[cat.strip()] = rate
    if not out:
        raise TokenAuditError("--want: no category=rate pairs")
    return out


def solve_thresholds(
    store,
    run_name: str,
    want: dict[str, float] | str,
    *,
    prompt_model_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    out_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Per wanted category: the threshold on P(refusal) that gives the wanted rate on this run's
    prompts, the achieved rate with a bootstrap interval (threshold held fixed: the rate to expect on
    new prompts like these), and a bootstrap interval of the threshold itself. ``"*"`` applies one
    wanted rate to every category. ``out_path`` writes a thresholds file for ``compare``.
    """
    if isinstance(want, str):
        want = parse_wanted(want)
    groups = load_groups(store, run_name, prompt_model_dir=prompt_model_dir)
    if "*" in want:
        want = {**{c: want["*"] for c in groups}, **{c: r for c, r in want.items() if c != "*"}}
    unknown = [c for c in want if c not in groups]
    if unknown:
        raise TokenAuditError(f"--want: unknown categories {unknown}; the run has {sorted(groups)}")
    rng = np.random.default_rng(seed)
    rows = []
    for cat, rate in want.items():
        p = groups[cat].p
        if p.size == 0:
            raise TokenAuditError(f"category {cat!r} has no labelled responses with a probability")
        t = solve_threshold(p, rate)
        idx = rng.integers(0, p.size, size=(n_boot, p.size))
        achieved = (p[idx] >= t).mean(axis=1)
        ts = np.array([solve_threshold(p[i], rate) for i in idx[: min(n_boot, 300)]])
        rows.append({
            "category": cat,
            "n": int(p.size),
            "want": rate,
            "threshold": t,
            "achieved_rate": expected_rate(p, t),
            "achieved_ci": [float(np.quantile(achieved, 0.025)), float(np.quantile(achieved, 0.975))],
            "threshold_ci": [float(np.quantile(ts, 0.025)), float(np.quantile(ts, 0.975))],
            "source": groups[cat].source,
        })
    if out_path is not None:
        Path(out_path).write_text(json.dumps({"run": run_name, "thresholds": {r["category"]: r["threshold"] for r in rows}},
                                             indent=2) + "\n", encoding="utf-8")
    return rows


def recalibrate(
    store,
    run_name: str,
    *,
    methods: list[str] | None = None,
    fit_fraction: float = 0.5,
    seed: int = 0,
    prompt_model_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Fit each recalibration method on a random ``fit_fraction`` of the run's (p, y) pairs (split by
    prompt, stratified by category) and report calibration metrics on the rest."""
    from classifiers.recalibration import evaluate_recalibrators

    groups = load_groups(store, run_name, prompt_model_dir=prompt_model_dir)
    rng = np.random.default_rng(seed)
    fit_p, fit_y, ev_p, ev_y = [], [], [], []
    for _, g in sorted(groups.items()):
        if not len(g.p):
            continue
        mask = rng.random(len(g.p)) < fit_fraction
        fit_p.append(g.p[mask]), fit_y.append(g.y[mask]), ev_p.append(g.p[~mask]), ev_y.append(g.y[~mask])
    fp, fy, ep, ey = (np.concatenate(a) for a in (fit_p, fit_y, ev_p, ev_y))
    if fp.size < 10 or ep.size < 10:
        raise TokenAuditError("too few labelled responses to fit and evaluate recalibration (need >= 10 each)")
    rows = evaluate_recalibrators(fp, fy, ep, ey, methods)
    sources = sorted({s for g in groups.values() for s in g.sources})
    for r in rows:
        r["source"] = sources[0] if len(sources) == 1 else "+".join(sources)
    return rows


# ----------------------------------------------------------------------------- labels and the demo
def label_with_sim_rule(store, run_name: str) -> int:
    """Write machine labels for a run of the refusal-token simulator with its exact rule (the
    simulator's refusal and compliance texts are known); returns the number of labels written."""
    from sqlalchemy import select

    from audit.rates import run_by_name
    from audit.store import Label, Response
    from audit.targets.refusal_token_sim import sim_label

    n = 0
    with store.session() as session:
        run = run_by_name(session, run_name)
        if run is None:
            raise TokenAuditError(f"no run named {run_name!r}")
        labelled = select(Label.response_id)
        for resp in session.scalars(select(Response).where(Response.run_id == run.id, Response.id.not_in(labelled))):
            y = sim_label(resp.text)
            if y is None:
                continue
            session.add(Label(response_id=resp.id, classifier="refusal-token-sim-exact", classifier_version="1",
                              source="machine", refusal=y, kind="full_refusal" if y else "full_compliance",
                              p_refusal=1.0 if y else 0.0, needs_review=False))
            n += 1
    return n


def demo_audit(
    store,
    base_dir: str | Path,
    *,
    n_per_category: int = 80,
    temperatures: tuple[float, ...] = (1.0, 2.5),
    seed: int = 0,
    labeller: str = "auto",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The demo's refusal-token audit: for each temperature, serve the simulator on a loopback port,
    register it as a target (with its refusal tokens), collect every prompt once with 20 logprobs,
    label the answers (``labeller="auto"``: the response classifier via ``label_run`` if available,
    else the simulator's exact rule; or ``"classifier"`` / ``"exact"``), and compare. Returns the
    comparison rows of all runs, each with ``run``, ``target``, ``sim_temperature`` and ``labeller``;
    reliability diagrams go to ``base_dir/tokens/<run>/``.
    """
    from audit.collect import collect
    from audit.prompts import import_prompts
    from audit.targets import add_target
    from audit.targets.loopback import LoopbackServer
    from audit.targets.refusal_token_sim import SimConfig, make_app, make_prompts

    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    cfg0 = SimConfig.from_dict({"seed": seed})
    prompts_path = base / "refusal_token_sim_prompts.jsonl"
    with open(prompts_path, "w", encoding="utf-8") as fh:
        for row in make_prompts(cfg0, n_per_category, seed=seed):
            fh.write(json.dumps({"prompt": row["text"], "category": row["category"]}) + "\n")
    set_name = "refusal-token-sim-prompts"
    import_prompts(store, prompts_path, set_name)
    rows: list[dict[str, Any]] = []
    for temp in temperatures:
        cfg = SimConfig.from_dict({"seed": seed, "temperature": temp})
        suffix = "calibrated" if temp == 1.0 else f"t{temp:g}"
        target_name, run_name = f"refusal-token-sim-{suffix}", f"tokens-demo-{suffix}"
        with LoopbackServer(make_app(cfg)) as server:
            add_target(store, target_name, "openai", f"{server.base_url}/v1", cfg.model,
                       refusal_tokens=cfg.refusal_tokens(), replace=True)
            collect(store, run_name=run_name, set_name=set_name, target_name=target_name, logprobs=20,
                    max_tokens=64, progress=progress)
        used = _label(store, run_name, labeller)
        for r in compare(store, run_name, plot_dir=base / "tokens" / run_name, seed=seed):
            rows.append({"run": run_name, "target": target_name, "sim_temperature": temp, "labeller": used, **r})
    return rows


def _label(store, run_name: str, labeller: str) -> str:
    if labeller not in ("auto", "classifier", "exact"):
        raise TokenAuditError(f"labeller must be auto, classifier or exact, not {labeller!r}")
    if labeller in ("auto", "classifier"):
        try:
            from audit.labeling import label_run

            label_run(store, run_name)
            return "response-classifier"
        except Exception as e:  # noqa: BLE001 - auto mode falls back, and says why
            if labeller == "classifier":
                raise
            reason = f"{type(e).__name__}: {e}"[:200]
            label_with_sim_rule(store, run_name)
            return f"simulator-exact-rule (response classifier unavailable: {reason})"
    label_with_sim_rule(store, run_name)
    return "simulator-exact-rule"


# ----------------------------------------------------------------------------- formatting
def jsonable(obj: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, recursively."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


COMPARE_KEYS = ("category", "n", "observed_rate", "observed_ci", "expected_rate", "expected_ci", "p_value", "ece", "source")
