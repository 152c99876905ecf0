"""Drift between runs: two-proportion test per category, Holm correction, minimum change; webhook."""

from __future__ import annotations

import json
import threading

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from audit.drift import compare_rates, deliver_webhook
from audit.rates import _rate
from audit.stats import holm_adjust, two_proportion_test
from audit.targets.loopback import LoopbackServer


def rates(**cats):
    rows = [_rate(c, n, k) for c, (k, n) in sorted(cats.items())]
    rows.append(_rate("(all)", sum(r.n for r in rows), sum(r.refusals for r in rows)))
    return rows


def test_significant_and_large_change_alerts():
    prev = rates(a=(10, 100), b=(50, 100))
    cur = rates(a=(40, 100), b=(52, 100))
    rows = {r.category: r for r in compare_rates("cur", "prev", cur, prev, alpha=0.05, min_change=0.1)}
    assert rows["a"].alert and rows["a"].significant and rows["a"].diff == pytest.approx(0.3)
    assert not rows["b"].alert and not rows["b"].significant
    # Holm: the adjusted p-values are those of holm_adjust over the two categories
    raw = [two_proportion_test(40, 100, 10, 100)[1], two_proportion_test(52, 100, 50, 100)[1]]
    assert [rows["a"].p_holm, rows["b"].p_holm] == pytest.approx(holm_adjust(raw))
    assert "went up from 10.0% (n=100) to 40.0% (n=100)" in rows["a"].message()
    assert not rows["(all)"].alert  # the total is reported, the categories carry the alerts


def test_significant_but_small_change_does_not_alert():
    prev = rates(a=(5000, 10000))
    cur = rates(a=(5400, 10000))  # +4 points, p ~ 1e-8
    (row,) = [r for r in compare_rates("cur", "prev", cur, prev, min_change=0.05) if r.category == "a"]
    assert row.significant and not row.alert
    (row,) = [r for r in compare_rates("cur", "prev", cur, prev, min_change=0.03) if r.category == "a"]
    assert row.alert


def test_large_but_not_significant_change_does_not_alert():
    prev = rates(a=(1, 5))
    cur = rates(a=(3, 5))  # +40 points on n=5
    (row,) = [r for r in compare_rates("cur", "prev", cur, prev) if r.category == "a"]
    assert not row.significant and not row.alert


def test_holm_can_remove_a_marginal_alert():
    # one category alone is significant at 0.05; with 5 categories Holm multiplies its p by 5
    prev = rates(a=(30, 100), b=(50, 100), c=(50, 100), d=(50, 100), e=(50, 100))
    cur = rates(a=(44, 100), b=(50, 100), c=(50, 100), d=(50, 100), e=(50, 100))
    p_raw = two_proportion_test(44, 100, 30, 100)[1]
    assert p_raw < 0.05
    (row,) = [r for r in compare_rates("cur", "prev", cur, prev) if r.category == "a"]
    assert row.p_holm == pytest.approx(min(1.0, 5 * p_raw)) and not row.alert


def test_categories_missing_from_one_run_are_skipped():
    rows = compare_rates("cur", "prev", rates(a=(1, 10), new=(5, 10)), rates(a=(1, 10), old=(5, 10)))
    assert {r.category for r in rows} == {"a", "(all)"}


@pytest.fixture
def hook():
    received: list[dict] = []
    got = threading.Event()

    async def receive(request):
        received.append({"body": json.loads(await request.body()), "content_type": request.headers.get("content-type")})
        got.set()
        return JSONResponse({"ok": True})

    with LoopbackServer(Starlette(routes=[Route("/hook", receive, methods=["POST"])])) as srv:
        yield srv.base_url + "/hook", received


def test_webhook_delivered_to_loopback_server(hook, monkeypatch):
    url, received = hook
    monkeypatch.setenv("TEST_JOBS_WEBHOOK", url)
    status = deliver_webhook("TEST_JOBS_WEBHOOK", {"job": "j", "alerts": [{"category": "a"}]})
    assert status == "delivered (HTTP 200)"
    assert received == [{"body": {"job": "j", "alerts": [{"category": "a"}]}, "content_type": "application/json"}]


def test_webhook_unset_or_unreachable_is_reported_not_raised(monkeypatch):
    assert deliver_webhook(None, {}) == "not configured"
    monkeypatch.delenv("TEST_JOBS_WEBHOOK", raising=False)
    assert deliver_webhook("TEST_JOBS_WEBHOOK", {}) == "skipped ($TEST_JOBS_WEBHOOK is not set)"
    from audit.targets.loopback import free_port

    monkeypatch.setenv("TEST_JOBS_WEBHOOK", f"http://127.0.0.1:{free_port()}/hook")
    assert deliver_webhook("TEST_JOBS_WEBHOOK", {}, timeout=5).startswith("failed (")
