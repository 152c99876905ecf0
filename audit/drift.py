"""Drift between two runs of a job: per category, a two-proportion test with Holm correction.

An alert fires for a category when its change is both significant (Holm-adjusted p < ``alpha``)
and at least ``min_change`` in absolute rate. Alerts go to stdout (by the caller), the run report,
and optionally a webhook whose URL is read from an environment variable (never stored).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass

from audit.rates import ALL, CategoryRate
from audit.stats import holm_adjust, two_proportion_test

log = logging.getLogger("audit.drift")


@dataclass(frozen=True)
class DriftRow:
    """The change of one category's refusal rate from the previous run to this one."""

    run_name: str
    previous_run_name: str
    category: str
    n_prev: int
    refusals_prev: int
    rate_prev: float | None
    n_cur: int
    refusals_cur: int
    rate_cur: float | None
    diff: float | None  # rate_cur - rate_prev
    p_value: float
    p_holm: float
    significant: bool
    alert: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        arrow = "up" if (self.diff or 0) > 0 else "down"
        return (
            f"{self.run_name}: refusal rate of {self.category!r} went {arrow} from "
            f"{_pct(self.rate_prev)} (n={self.n_prev}) to {_pct(self.rate_cur)} (n={self.n_cur}), "
            f"change {self.diff:+.3f}, Holm p={self.p_holm:.3g} (previous run {self.previous_run_name})"
        )


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def compare_rates(
    run_name: str,
    previous_run_name: str,
    current: list[CategoryRate],
    previous: list[CategoryRate],
    *,
    alpha: float = 0.05,
    min_change: float = 0.1,
) -> list[DriftRow]:
    """Per-category drift rows for the categories present (with n > 0) in both runs.

    Holm's correction runs over the categories of this pair of runs; the ``(all)`` row, when both
    have it, is tested on its own (it is not an extra hypothesis about a category) and alerts only
    when the two runs share no category.
    """
    prev = {r.category: r for r in previous if r.n > 0}
    cur = {r.category: r for r in current if r.n > 0}
    cats = [c for c in sorted(cur) if c in prev and c != ALL]
    tests = [two_proportion_test(cur[c].refusals, cur[c].n, prev[c].refusals, prev[c].n) for c in cats]
    adjusted = holm_adjust([p for _, p in tests]) if tests else []
    rows = []
    for c, (diff, p), ph in zip(cats, tests, adjusted):
        rows.append(_row(run_name, previous_run_name, c, prev[c], cur[c], diff, p, ph, alpha, min_change, can_alert=True))
    if ALL in cur and ALL in prev:
        diff, p = two_proportion_test(cur[ALL].refusals, cur[ALL].n, prev[ALL].refusals, prev[ALL].n)
        rows.append(_row(run_name, previous_run_name, ALL, prev[ALL], cur[ALL], diff, p, p, alpha, min_change, can_alert=not cats))
    return rows


def _row(run, prev_run, cat, p: CategoryRate, c: CategoryRate, diff, pv, ph, alpha, min_change, can_alert) -> DriftRow:
    d = None if diff is None or math.isnan(diff) else float(diff)
    significant = bool(ph < alpha)
    return DriftRow(
        run_name=run,
        previous_run_name=prev_run,
        category=cat,
        n_prev=p.n,
        refusals_prev=p.refusals,
        rate_prev=p.rate if p.n else None,
        n_cur=c.n,
        refusals_cur=c.refusals,
        rate_cur=c.rate if c.n else None,
        diff=d,
        p_value=float(pv),
        p_holm=float(ph),
        significant=significant,
        alert=bool(can_alert and significant and d is not None and abs(d) >= min_change),
    )


def deliver_webhook(url_env: str | None, payload: dict, *, timeout: float = 10.0) -> str:
    """POST ``payload`` as JSON to the URL in ``$url_env``; returns a short status for the log/report.

    A missing variable means no webhook; a delivery failure is logged and reported, never raised
    (an unreachable webhook must not hide the alert itself, which is also on stdout and in the report).
    """
    if not url_env:
        return "not configured"
    url = os.environ.get(url_env)
    if not url:
        return f"skipped (${url_env} is not set)"
    import httpx

    try:
        resp = httpx.post(url, content=json.dumps(payload, default=str), headers={"content-type": "application/json"}, timeout=timeout)
    except httpx.HTTPError as exc:
        log.error("webhook delivery to $%s failed: %s", url_env, type(exc).__name__)
        return f"failed ({type(exc).__name__})"
    if resp.status_code >= 400:
        log.error("webhook delivery to $%s failed: HTTP %s", url_env, resp.status_code)
        return f"failed (HTTP {resp.status_code})"
    log.info("webhook delivered to $%s: HTTP %s", url_env, resp.status_code)
    return f"delivered (HTTP {resp.status_code})"
