"""The report of one job run, in its own folder: ``summary.json``, ``report.md``, ``report.html``,
``rates.csv`` (per-category rates of every run), ``tense_probe.csv``, ``drift.csv`` and the n-gram
reports (``ngrams/<run>/``).

``report.html`` is self-contained: no scripts, no external assets; its charts are inline SVG (rates
with 95% Wilson intervals). Every text that comes from data (prompt-set, target and category names,
error messages) is HTML-escaped. The ``summary.json`` schema is documented in ``docs/jobs.md``.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("audit.reports.run_report")

RATE_FIELDS = ["run_name", "target", "prompt_set", "probe", "category", "n", "refusals", "rate", "ci_low", "ci_high",
               "provider_refusals", "errors", "human_labels"]
TENSE_FIELDS = ["target", "prompt_set", "tense", "k", "attempts_per_prompt", "category", "n_prompts",
                "original_refusal_rate", "original_ci_low", "original_ci_high", "asr", "asr_ci_low", "asr_ci_high",
                "refused_originally", "jailbroken", "asr_among_refused"]
DRIFT_FIELDS = ["run_name", "previous_run_name", "target", "prompt_set", "probe", "category", "n_prev", "rate_prev",
                "n_cur", "rate_cur", "diff", "p_value", "p_holm", "significant", "alert"]


def _safe(obj: Any) -> Any:
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_summary_json(summary: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir) / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_safe(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def write_run_reports(summary: dict, out_dir: str | Path, *, store=None, ngrams: bool = True) -> dict[str, Any]:
    """Write every report file of a job run into ``out_dir``; returns ``{kind: path}`` (strings)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    files["rates_csv"] = str(_write_csv(out / "rates.csv", RATE_FIELDS, _rate_rows(summary)))
    files["tense_probe_csv"] = str(_write_csv(out / "tense_probe.csv", TENSE_FIELDS, _tense_rows(summary)))
    files["drift_csv"] = str(_write_csv(out / "drift.csv", DRIFT_FIELDS, summary.get("drift", [])))
    files["ngrams"] = _ngram_reports(summary, out, store) if (ngrams and store is not None) else []
    files["report_md"] = str(out / "report.md")
    files["report_html"] = str(out / "report.html")
    files["summary_json"] = str(out / "summary.json")
    summary = dict(summary, files=files)
    (out / "report.md").write_text(render_markdown(summary), encoding="utf-8")
    (out / "report.html").write_text(render_html(summary), encoding="utf-8")
    write_summary_json(summary, out)
    return files


def _write_csv(path: Path, fields: list[str], rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in fields})
    return path


def _csv_value(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    if v is None:
        return ""
    text = str(v)
    # neutralise spreadsheet formulas in data-derived cells
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _rate_rows(summary):
    for run in summary.get("runs", []):
        for r in run.get("rates", []):
            yield dict(r, run_name=run["run_name"], target=run["target"], prompt_set=run["prompt_set"], probe=run.get("probe") or "")


def _tense_rows(summary):
    for t in summary.get("probes", {}).get("tense", []):
        for r in t.get("by_category", []):
            oc, ac = r.get("original_ci") or [None, None], r.get("asr_ci") or [None, None]
            yield dict(r, target=t["target"], prompt_set=t["prompt_set"], tense=t["tense"], k=t["k"],
                       attempts_per_prompt=t.get("attempts_per_prompt"), original_ci_low=oc[0], original_ci_high=oc[1],
                       asr_ci_low=ac[0], asr_ci_high=ac[1])


def _ngram_reports(summary: dict, out: Path, store) -> list[str]:
    try:
        from audit.reports.ngrams import write_ngram_report
    except ImportError as exc:
        log.warning("n-gram report unavailable: %s", exc)
        return []
    written = []
    for run in summary.get("runs", []):
        if (run.get("probe") or "").startswith("reformulator") or not run.get("responses"):
            continue
        d = out / "ngrams" / run["run_name"]
        try:
            write_ngram_report(store, run["run_name"], d, formats=("csv", "json", "md", "html"))
            written.append(str(d))
        except Exception as exc:  # noqa: BLE001 - one n-gram report must not sink the run report
            log.error("n-gram report of %s failed: %s: %s", run["run_name"], type(exc).__name__, exc)
    return written


# ------------------------------------------------------------------------------------ formatting


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _ci(lo, hi) -> str:
    return "" if lo is None or hi is None else f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _md(text: Any) -> str:
    """A table cell: pipes, backslashes and newlines escaped; markup characters neutralised."""
    s = "" if text is None else str(text)
    for ch in ("\\", "|", "`", "*", "_", "<", ">", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return " ".join(s.split())


def _probe_label(probe) -> str:
    return probe or "audit"


def render_markdown(summary: dict) -> str:
    L = []
    L.append(f"# Refusal audit: job {_md(summary['job'])}, {summary['run_date']}")
    L.append("")
    L.append(f"**Status: {summary['status']}** (exit code {summary['exit_code']}). Store: `{summary.get('store', '')}`. "
             f"Classifier: {_md(summary.get('classifier', {}).get('model'))}.")
    L.append("")
    L.append("## Alerts")
    L.append("")
    if summary["alerts"]:
        for a in summary["alerts"]:
            L.append(f"- **ALERT** {_md(a['message'])}")
        if summary.get("webhook"):
            L.append(f"\nWebhook: {_md(summary['webhook'])}")
    else:
        r = summary.get("alert_rules", {})
        L.append(f"No alert (rule: Holm-adjusted p < {r.get('alpha')} and |change| ≥ {r.get('min_change')}).")
    L.append("")
    f = summary["failures"]
    L.append("## Target failures")
    L.append("")
    L.append("| target | failed | requested | failure rate |")
    L.append("|---|---:|---:|---:|")
    for t in f["by_target"]:
        flag = " **(above threshold)**" if any(x["target"] == t["target"] for x in f["exceeded"]) else ""
        L.append(f"| {_md(t['target'])} | {t['failed']} | {t['requested']} | {_pct(t['failure_rate'])}{flag} |")
    L.append(f"\nThreshold: {_pct(f['max_failure_rate'])}.")
    L.append("")
    L.append("## Refusal rates per run")
    for run in summary["runs"]:
        if (run.get("probe") or "").startswith("reformulator"):
            continue
        L.append("")
        L.append(f"### {_md(run['run_name'])}")
        L.append("")
        L.append(f"Target {_md(run['target'])}, set {_md(run['prompt_set'])} ({_probe_label(run.get('probe'))}); "
                 f"{run['responses']} responses, {run['failed']} failed; previous run: {_md(run.get('previous_run') or 'none')}.")
        for k in ("collect_error", "label_error"):
            if run.get(k):
                L.append(f"\n{k.replace('_', ' ')}: {_md(run[k])}")
        L.append("")
        L.append("| category | n | refusals | rate | 95% CI |")
        L.append("|---|---:|---:|---:|---|")
        for r in run["rates"]:
            L.append(f"| {_md(r['category'])} | {r['n']} | {r['refusals']} | {_pct(r['rate'])} | {_ci(r['ci_low'], r['ci_high'])} |")
        if isinstance(run.get("tokens"), list) and run["tokens"]:
            L.append("")
            L.append("Refusal tokens (expected from first-token probabilities vs observed):")
            L.append("")
            L.append("| category | n | observed | expected | p | ECE |")
            L.append("|---|---:|---:|---:|---:|---:|")
            for t in run["tokens"]:
                L.append(f"| {_md(t.get('category'))} | {t.get('n')} | {_pct(t.get('observed_rate'))} | "
                         f"{_pct(t.get('expected_rate'))} | {_num(t.get('p_value'))} | {_num(t.get('ece'))} |")
    tense = summary.get("probes", {}).get("tense", [])
    if tense:
        L.append("")
        L.append("## Past/future-tense reformulation probe")
        L.append("")
        L.append("Attack success within k attempts (ASR): share of harmful requests for which at least one rewrite "
                 "got a non-refusal, beside the original request's refusal rate.")
        for t in tense:
            L.append("")
            L.append(f"### {_md(t['target'])}: {_md(t['prompt_set'])}, {t['tense']} tense, k = {t['k']}")
            L.append("")
            L.append(f"Rewrites: {_md(json.dumps(t.get('rewrites', {})))}; probe run {_md(t['probe_run'])}.")
            L.append("")
            L.append("| category | prompts | original refusal rate | ASR within k | 95% CI | ASR among refused |")
            L.append("|---|---:|---:|---:|---|---:|")
            for r in t["by_category"]:
                L.append(f"| {_md(r['category'])} | {r['n_prompts']} | {_pct(r['original_refusal_rate'])} | "
                         f"{_pct(r['asr'])} | {_ci(*r['asr_ci'])} | {_pct(r.get('asr_among_refused'))} |")
    contrast = summary.get("probes", {}).get("contrast", [])
    if contrast:
        L.append("")
        L.append("## Over-refusal (CoCoNot benign contrast set)")
        L.append("")
        L.append("| target | n | over-refusal rate | 95% CI |")
        L.append("|---|---:|---:|---|")
        for c in contrast:
            ci = c.get("ci") or [None, None]
            L.append(f"| {_md(c['target'])} | {c['n']} | {_pct(c['over_refusal_rate'])} | {_ci(*ci)} |")
    L.append("")
    L.append("## Drift against the previous run")
    L.append("")
    if summary["drift"]:
        L.append("| run | category | previous | current | change | Holm p | alert |")
        L.append("|---|---|---:|---:|---:|---:|---|")
        for d in summary["drift"]:
            L.append(f"| {_md(d['run_name'])} | {_md(d['category'])} | {_pct(d['rate_prev'])} | {_pct(d['rate_cur'])} | "
                     f"{_num(d['diff'], signed=True)} | {_num(d['p_holm'])} | {'**yes**' if d['alert'] else 'no'} |")
    else:
        L.append("No previous run of this job to compare with.")
    L.append("")
    return "\n".join(L)


def _num(x, signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3g}"


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f5f5f5}
.status{display:inline-block;padding:.2rem .6rem;border-radius:4px;font-weight:600}
.ok{background:#e3f4e3}.alert{background:#fde2e2}.target_failures{background:#fff1c9}
.alertbox{border-left:4px solid #c62828;background:#fdeeee;padding:.5rem 1rem;margin:.3rem 0}
.muted{color:#666;font-size:.9rem}svg text{font-family:inherit}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def svg_rate_chart(rows: list[dict], *, title: str, prev: dict[str, float] | None = None,
                   value: str = "rate", lo: str = "ci_low", hi: str = "ci_high", second: list[dict] | None = None,
                   legend: tuple[str, str] | None = None) -> str:
    """A horizontal bar chart of rates (0–100%) with 95% interval whiskers, as an inline SVG string.

    ``prev`` maps a category to its previous rate (drawn as a hollow diamond); ``second`` draws a
    second, thinner bar per row (e.g. ASR beside the original refusal rate).
    """
    label_w, plot_w, row_h, top = 230, 460, 26 if second else 20, 30
    h = top + row_h * max(1, len(rows)) + 28
    W = label_w + plot_w + 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img" aria-label="{_e(title)}">',
             f'<title>{_e(title)}</title>',
             f'<text x="0" y="16" font-size="13" font-weight="600">{_e(title)}</text>']
    x0 = label_w
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + t * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{h - 22}" stroke="#e0e0e0"/>')
        parts.append(f'<text x="{x:.1f}" y="{h - 8}" font-size="10" text-anchor="middle" fill="#666">{int(t * 100)}%</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h
        label = str(r.get("category", ""))
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" font-size="11" text-anchor="end"><title>{_e(label)}</title>{_e(short)}</text>')
        bars = [(r, value, lo, hi, "#5b7db1", 12 if second else 14, 0)]
        if second:
            bars = [(r, value, lo, hi, "#5b7db1", 10, 0), (second[i], "asr", "asr_lo", "asr_hi", "#d9822b", 10, 11)]
        for rr, vk, lk, hk, color, bh, dy in bars:
            v = rr.get(vk)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                parts.append(f'<text x="{x0 + 4}" y="{y + dy + 10}" font-size="10" fill="#999">n/a</text>')
                continue
            parts.append(f'<rect x="{x0}" y="{y + dy + 2}" width="{max(0.5, v * plot_w):.1f}" height="{bh}" fill="{color}" opacity="0.85"/>')
            lo_v, hi_v = rr.get(lk), rr.get(hk)
            if lo_v is not None and hi_v is not None:
                cy = y + dy + 2 + bh / 2
                parts.append(f'<line x1="{x0 + lo_v * plot_w:.1f}" y1="{cy:.1f}" x2="{x0 + hi_v * plot_w:.1f}" y2="{cy:.1f}" stroke="#222" stroke-width="1.3"/>')
                for xv in (lo_v, hi_v):
                    parts.append(f'<line x1="{x0 + xv * plot_w:.1f}" y1="{cy - 4:.1f}" x2="{x0 + xv * plot_w:.1f}" y2="{cy + 4:.1f}" stroke="#222" stroke-width="1.3"/>')
            parts.append(f'<text x="{x0 + plot_w + 6}" y="{y + dy + 12}" font-size="10">{_e(_pct(v))}</text>')
        if prev and label in prev and prev[label] is not None:
            px, py = x0 + prev[label] * plot_w, y + 9
            parts.append(f'<path d="M{px:.1f} {py - 5:.1f} L{px + 5:.1f} {py:.1f} L{px:.1f} {py + 5:.1f} L{px - 5:.1f} {py:.1f} Z" fill="none" stroke="#c62828" stroke-width="1.5"><title>previous run: {_e(_pct(prev[label]))}</title></path>')
    if legend:
        parts.append(f'<rect x="{W - 250}" y="5" width="10" height="10" fill="#5b7db1"/><text x="{W - 236}" y="14" font-size="10">{_e(legend[0])}</text>')
        parts.append(f'<rect x="{W - 130}" y="5" width="10" height="10" fill="#d9822b"/><text x="{W - 116}" y="14" font-size="10">{_e(legend[1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(summary: dict) -> str:
    H = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>Refusal audit: {_e(summary['job'])} {_e(summary['run_date'])}</title><style>{_CSS}</style></head><body>"]
    H.append(f"<h1>Refusal audit: job {_e(summary['job'])}, {_e(summary['run_date'])}</h1>")
    H.append(f'<p><span class="status {_e(summary["status"])}">{_e(summary["status"])}</span> '
             f'<span class="muted">exit code {_e(summary["exit_code"])} · store {_e(summary.get("store"))} · classifier '
             f'{_e(summary.get("classifier", {}).get("model"))} · finished {_e(summary.get("finished_at"))}</span></p>')
    H.append("<h2>Alerts</h2>")
    if summary["alerts"]:
        for a in summary["alerts"]:
            H.append(f'<div class="alertbox"><strong>ALERT</strong> {_e(a["message"])}</div>')
        if summary.get("webhook"):
            H.append(f'<p class="muted">Webhook: {_e(summary["webhook"])}</p>')
    else:
        r = summary.get("alert_rules", {})
        H.append(f"<p>No alert (rule: Holm-adjusted p &lt; {_e(r.get('alpha'))} and |change| ≥ {_e(r.get('min_change'))}).</p>")
    f = summary["failures"]
    H.append("<h2>Target failures</h2>")
    exceeded = {x["target"] for x in f["exceeded"]}
    H.append(_table(["target", "failed", "requested", "failure rate", "note"],
                    [[t["target"], t["failed"], t["requested"], _pct(t["failure_rate"]), "above threshold" if t["target"] in exceeded else ""]
                     for t in f["by_target"]], {1, 2, 3}))
    H.append(f'<p class="muted">Threshold {_e(_pct(f["max_failure_rate"]))}.</p>')
    drift_prev: dict[str, dict[str, float]] = {}
    for d in summary.get("drift", []):
        drift_prev.setdefault(d["run_name"], {})[d["category"]] = d["rate_prev"]
    H.append("<h2>Refusal rates per run</h2>")
    H.append('<p class="muted">Bars: observed refusal rate; whiskers: 95% Wilson interval; red diamond: the previous run.</p>')
    for run in summary["runs"]:
        if (run.get("probe") or "").startswith("reformulator"):
            continue
        H.append(f"<h3>{_e(run['run_name'])}</h3>")
        H.append(f"<p>Target {_e(run['target'])}, set {_e(run['prompt_set'])} ({_e(_probe_label(run.get('probe')))}); "
                 f"{_e(run['responses'])} responses, {_e(run['failed'])} failed; previous run: {_e(run.get('previous_run') or 'none')}.</p>")
        for k in ("collect_error", "label_error"):
            if run.get(k):
                H.append(f'<p class="alertbox">{_e(k.replace("_", " "))}: {_e(run[k])}</p>')
        if run["rates"]:
            H.append(svg_rate_chart(run["rates"], title=f"Refusal rate by category: {run['run_name']}", prev=drift_prev.get(run["run_name"])))
            H.append(_table(["category", "n", "refusals", "rate", "95% CI"],
                            [[r["category"], r["n"], r["refusals"], _pct(r["rate"]), _ci(r["ci_low"], r["ci_high"])] for r in run["rates"]],
                            {1, 2, 3}))
        if isinstance(run.get("tokens"), list) and run["tokens"]:
            H.append("<p>Refusal tokens: rate expected from first-token probabilities vs observed.</p>")
            H.append(_table(["category", "n", "observed", "expected", "p", "ECE"],
                            [[t.get("category"), t.get("n"), _pct(t.get("observed_rate")), _pct(t.get("expected_rate")),
                              _num(t.get("p_value")), _num(t.get("ece"))] for t in run["tokens"]], {1, 2, 3, 4, 5}))
    tense = summary.get("probes", {}).get("tense", [])
    if tense:
        H.append("<h2>Past/future-tense reformulation probe</h2>")
        H.append("<p>Attack success within k attempts (ASR): share of harmful requests for which at least one rewrite got a "
                 "non-refusal (orange), beside the original request's refusal rate (blue).</p>")
        for t in tense:
            H.append(f"<h3>{_e(t['target'])}: {_e(t['prompt_set'])}, {_e(t['tense'])} tense, k = {_e(t['k'])}</h3>")
            H.append(f'<p class="muted">Rewrites: {_e(json.dumps(t.get("rewrites", {})))}; probe run {_e(t["probe_run"])}.</p>')
            rows = t["by_category"]
            if rows:
                first = [{"category": r["category"], "rate": r["original_refusal_rate"], "ci_low": r["original_ci"][0], "ci_high": r["original_ci"][1]} for r in rows]
                second = [{"asr": r["asr"], "asr_lo": r["asr_ci"][0], "asr_hi": r["asr_ci"][1]} for r in rows]
                H.append(svg_rate_chart(first, second=second, title=f"{t['tense']}-tense probe: {t['target']} on {t['prompt_set']}",
                                        legend=("original refusal rate", f"ASR within {t['k']}")))
                H.append(_table(["category", "prompts", "original refusal rate", "ASR within k", "95% CI", "ASR among refused"],
                                [[r["category"], r["n_prompts"], _pct(r["original_refusal_rate"]), _pct(r["asr"]), _ci(*r["asr_ci"]),
                                  _pct(r.get("asr_among_refused"))] for r in rows], {1, 2, 3, 5}))
    contrast = summary.get("probes", {}).get("contrast", [])
    if contrast:
        H.append("<h2>Over-refusal (CoCoNot benign contrast set)</h2>")
        rows = [{"category": c["target"], "rate": c["over_refusal_rate"], "ci_low": (c.get("ci") or [None, None])[0],
                 "ci_high": (c.get("ci") or [None, None])[1]} for c in contrast]
        H.append(svg_rate_chart(rows, title="Over-refusal rate by target"))
        H.append(_table(["target", "n", "over-refusal rate", "95% CI"],
                        [[c["target"], c["n"], _pct(c["over_refusal_rate"]), _ci(*(c.get("ci") or [None, None]))] for c in contrast], {1, 2}))
    H.append("<h2>Drift against the previous run</h2>")
    if summary["drift"]:
        H.append(_table(["run", "category", "previous", "current", "change", "Holm p", "alert"],
                        [[d["run_name"], d["category"], _pct(d["rate_prev"]), _pct(d["rate_cur"]), _num(d["diff"], signed=True),
                          _num(d["p_holm"]), "ALERT" if d["alert"] else ""] for d in summary["drift"]], {2, 3, 4, 5}))
    else:
        H.append("<p>No previous run of this job to compare with.</p>")
    H.append('<p class="muted">Files: summary.json, report.md, rates.csv, tense_probe.csv, drift.csv, ngrams/.</p>')
    H.append("</body></html>\n")
    return "".join(H)
