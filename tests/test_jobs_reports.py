"""Run reports: self-contained escaped HTML with SVG charts, Markdown, CSV, and summary.json."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

from audit.reports.run_report import render_html, render_markdown, svg_rate_chart, write_run_reports

EVIL = '<script>alert("x")</script>'
EVIL_TARGET = '<img src="http://evil.example/a.png" onerror="x()">'


def _rate(cat, n, k, lo, hi):
    return {"category": cat, "n": n, "refusals": k, "rate": k / n, "ci_low": lo, "ci_high": hi,
            "provider_refusals": 0, "errors": 0, "human_labels": 0}


def summary():
    rates = [_rate(EVIL, 10, 3, 0.1, 0.6), _rate("=HYPERLINK(\"http://x\")", 5, 5, 0.57, 1.0), _rate("(all)", 15, 8, 0.3, 0.75)]
    drift = {"run_name": "job-t-s-2026-01-02", "previous_run_name": "job-t-s-2026-01-01", "target": EVIL_TARGET,
             "prompt_set": "s", "probe": None, "category": EVIL, "n_prev": 10, "refusals_prev": 9, "rate_prev": 0.9,
             "n_cur": 10, "refusals_cur": 3, "rate_cur": 0.3, "diff": -0.6, "p_value": 0.001, "p_holm": 0.002,
             "significant": True, "alert": True}
    return {
        "schema_version": 1, "job": "job", "run_date": "2026-01-02", "config_path": "/x/audit.toml",
        "store": "sqlite:///x.db", "resumed": False, "started_at": "t0", "finished_at": "t1",
        "exit_code": 1, "status": "alert", "classifier": {"model": "default"}, "budget": {},
        "alert_rules": {"min_change": 0.1, "alpha": 0.05, "max_failure_rate": 0.2, "webhook_url_env": None},
        "runs": [{"run_name": "job-t-s-2026-01-02", "target": EVIL_TARGET, "prompt_set": "s", "probe": None,
                  "source_set": None, "status": "complete", "prompts": 15, "requested": 15, "responses": 15,
                  "failed": 0, "failure_rate": 0.0, "rates": rates, "previous_run": "job-t-s-2026-01-01",
                  "label_error": EVIL, "tokens": None}],
        "probes": {"tense": [{"target": EVIL_TARGET, "prompt_set": "s", "tense": "past", "k": 3, "attempts_per_prompt": 3,
                              "rewrites": {"rule": 30}, "reformulator": None, "original_run": "a", "probe_run": "b",
                              "by_category": [{"category": EVIL, "n_prompts": 10, "original_refusal_rate": 0.9,
                                               "original_ci": [0.6, 0.98], "asr": 0.5, "asr_ci": [0.24, 0.76],
                                               "refused_originally": 9, "jailbroken": 4, "asr_among_refused": 0.44,
                                               "asr_among_refused_ci": [0.2, 0.7]}]}],
                   "contrast": [{"target": EVIL_TARGET, "run_name": "c", "prompt_set": "coconot-contrast",
                                 "over_refusal_rate": 0.05, "ci": [0.01, 0.2], "n": 40, "by_category": []}]},
        "drift": [drift],
        "alerts": [dict(drift, message=f"refusal rate of {EVIL!r} went down")],
        "failures": {"max_failure_rate": 0.2, "by_target": [{"target": EVIL_TARGET, "failed": 0, "requested": 15, "failure_rate": 0.0}],
                     "exceeded": []},
        "webhook": "delivered (HTTP 200)", "files": {},
    }


def test_html_is_escaped_and_self_contained():
    page = render_html(summary())
    assert "<script" not in page.lower()
    assert EVIL not in page and EVIL_TARGET not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=&quot;http://evil.example/a.png&quot;" in page
    # no external assets: no element loads anything (no src/href, no script/link/img/iframe), no CSS url()
    tags = _tags(page)
    assert not {t for t, _ in tags} & {"script", "link", "img", "iframe", "object", "embed"}
    assert not [a for _, attrs in tags for a, _ in attrs if a in ("src", "href", "xlink:href", "srcset")]
    assert not [a for _, attrs in tags for a, _ in attrs if a.startswith("on")]
    assert "@import" not in page and "url(" not in page
    # charts are inline SVG with bars and interval whiskers, and the alert is shown
    assert page.count("<svg") >= 3  # run rates, tense probe, over-refusal
    assert "<rect" in page and "<line" in page
    assert "ALERT" in page and "delivered (HTTP 200)" in page


def _tags(page: str) -> list[tuple[str, list]]:
    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    P().feed(page)
    return found


def test_svg_chart_draws_intervals_and_previous_rate():
    svg = svg_rate_chart([_rate("a", 10, 5, 0.2, 0.8)], title="t", prev={"a": 0.9})
    # whisker from 20% to 80% of a 460-px plot starting at x=230
    assert 'x1="322.0"' in svg and 'x2="598.0"' in svg
    assert "previous run: 90.0%" in svg


def test_markdown_and_csv(tmp_path):
    files = write_run_reports(summary(), tmp_path, store=None)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "**Status: alert**" in md and "**ALERT**" in md
    assert "\\<script\\>" in md  # markup neutralised in Markdown too
    with open(tmp_path / "rates.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["category"] for r in rows] == [EVIL, "'=HYPERLINK(\"http://x\")", "(all)"]  # formula neutralised
    assert rows[0]["rate"] == "0.3" and rows[0]["ci_low"] == "0.1"
    with open(tmp_path / "tense_probe.csv", newline="", encoding="utf-8") as fh:
        t = list(csv.DictReader(fh))
    assert t[0]["asr"] == "0.5" and t[0]["original_refusal_rate"] == "0.9"
    data = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert data["schema_version"] == 1 and data["files"]["report_html"] == files["report_html"]
    assert render_markdown(summary()).startswith("# Refusal audit: job job, 2026-01-02")


def test_summary_json_has_no_nan(tmp_path):
    s = summary()
    s["runs"][0]["rates"].append(_rate("empty", 1, 0, 0.0, 1.0) | {"n": 0, "rate": float("nan")})
    write_run_reports(s, tmp_path, store=None)
    text = (tmp_path / "summary.json").read_text(encoding="utf-8")
    assert "NaN" not in text
    assert json.loads(text)["runs"][0]["rates"][-1]["rate"] is None
