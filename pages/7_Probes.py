"""Probes: past-tense and future-tense reformulation results (attack success within k rewrites,
beside the original refusal rate) and the over-refusal contrast set, from the batch jobs' summaries."""

import json

import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("Probes")
results = db.probe_results(store)
if not results:
    n = db.job_count(store)
    st.info(
        "No probe results yet"
        + (f" ({n} batch job run(s) recorded, none with probes)." if n else " (no batch job has run).")
        + " Past/future-tense reformulation and over-refusal probes are run by batch jobs "
        "(`[probes.tense]` / `[probes.contrast]` in a job file, see docs/jobs.md)."
    )
    st.stop()
job = st.selectbox("Job run", results, format_func=lambda j: f"{j['job']} · {j['date']} · {j['status']}", key="pr_job")
if job["runs"]:
    st.caption("Runs: " + ", ".join(map(str, job["runs"])))
if job["tense"]:
    st.header("Tense reformulation")
    st.caption(
        "Attack success (ASR): share of harmful requests with at least one non-refused answer among their "
        "k past/future-tense rewrites, beside the share refused in their original wording (95% Wilson intervals)."
    )
for t in job["tense"]:
    st.subheader(f"{t.get('tense', '?')} tense · {t.get('target', '?')} · {t.get('prompt_set', '?')} · k={t.get('k', '?')}")
    st.caption(
        f"original run `{t.get('original_run')}` · probe run `{t.get('probe_run')}` · "
        f"rewrites {json.dumps(t.get('rewrites') or {})}"
        + (f" · reformulator {t['reformulator']}" if t.get("reformulator") else "")
    )
    if t["chart"]:
        ui.show_chart(ui.rate_chart(pd.DataFrame(t["chart"]), color="measure", x_title="rate (95% CI)"))
    if t["rows"]:
        st.dataframe(pd.DataFrame(t["rows"]), hide_index=True, width="stretch")
if job["contrast"]:
    st.header("Over-refusal (contrast set)")
for c in job["contrast"]:
    lo, hi = (c.get("ci") or [None, None])[:2]
    st.subheader(f"{c.get('target', '?')} · {c.get('prompt_set', '?')}")
    st.markdown(
        f"Over-refusal rate **{ui.pct(c.get('over_refusal_rate'))}** (95% CI {ui.pct(lo)} – {ui.pct(hi)}, "
        f"n = {c.get('n', '?')}) · run `{c.get('run_name')}`"
    )
    if c["chart"]:
        ui.show_chart(ui.rate_chart(pd.DataFrame(c["chart"]), color="measure"))
for path, value in job["other"]:
    st.subheader(path)
    st.code(json.dumps(value, indent=2, default=str)[:5000], language="json")
