"""Overview: targets × runs, refusal rate per category with 95% intervals, provider signals and
errors kept apart from the text labels."""

import html

import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("Overview")
summary = db.run_summary(store)
if not summary:
    ui.no_runs_message()
    st.stop()

c = st.columns(5)
c[0].metric("Runs", len(summary))
c[1].metric("Responses", f"{sum(r['responses'] for r in summary):,}")
c[2].metric("Labelled", f"{sum(r['n'] for r in summary):,}")
c[3].metric("Provider refusal signals", f"{sum(r['provider_refusals'] for r in summary):,}")
c[4].metric("Errors", f"{sum(r['errors'] for r in summary):,}")

st.subheader("Targets × runs")
st.caption(
    "Rates count text labels only (human labels override machine labels). Provider refusal signals "
    "(content filters, `message.refusal`, policy errors) and transport errors are counted in their own columns."
)
table = pd.DataFrame(
    [
        {
            "target": r["target"], "provider": r["provider"], "model": r["model"], "run": r["name"],
            "prompt set": r["prompt_set"], "status": r["status"], "responses": r["responses"], "labelled": r["n"],
            "refusal rate": r["rate"], "95% CI": f"{ui.pct(r['ci_low'])} – {ui.pct(r['ci_high'])}",
            "human labels": r["human_labels"], "provider signals": r["provider_refusals"], "errors": r["errors"],
        }
        for r in summary
    ]
)  # fmt: skip
st.dataframe(
    table,
    hide_index=True,
    column_config={"refusal rate": st.column_config.NumberColumn(format="percent")},
)

st.subheader("Refusal rate per category (95% Wilson intervals)")
runs = db.runs(store)
default = [r["id"] for r in runs[-3:]]
chosen = st.multiselect(
    "Runs", [r["id"] for r in runs], default=default, key="ov_runs",
    format_func=lambda i: ui.run_label(next(r for r in runs if r["id"] == i)),
)  # fmt: skip
if chosen:
    names = {r["id"]: r["name"] for r in runs}
    rows = [r for r in db.category_table(store, chosen) if r["n"] > 0]
    df = pd.DataFrame(rows)
    if df.empty:
        st.info("No labelled responses in these runs yet: label them with `refusal-audit classify run ...`.")
    else:
        df["run"] = df["run_id"].map(names)
        ui.show_chart(ui.rate_chart(df[["category", "run", "rate", "ci_low", "ci_high", "n"]]))
        with st.expander("Counts per category"):
            st.dataframe(
                df[["run", "category", "responses", "n", "refusals", "rate", "ci_low", "ci_high", "human_labels",
                    "provider_refusals", "errors"]],
                hide_index=True,
                column_config={c: st.column_config.NumberColumn(format="percent") for c in ("rate", "ci_low", "ci_high")},
            )  # fmt: skip

left, right = st.columns(2)
with left:
    st.subheader("Provider refusal signals")
    sig = db.provider_signals(store)
    if sig:
        names = {r["id"]: r["name"] for r in runs}
        sdf = pd.DataFrame(sig)
        sdf["run"] = sdf["run_id"].map(names)
        st.dataframe(sdf.pivot_table(index="run", columns="signal", values="count", fill_value=0), width="stretch")
    else:
        st.caption("No provider refusal signals recorded.")
with right:
    st.subheader("Errors")
    err_runs = [r for r in summary if r["errors"]]
    if err_runs:
        pick = st.selectbox("Run", err_runs, format_func=lambda r: f"{r['name']} ({r['errors']} errors)", key="ov_err")
        st.dataframe(pd.DataFrame(db.error_summary(store, pick["id"])), hide_index=True, width="stretch")
    else:
        st.caption("No errors recorded.")

st.subheader("Sample responses")
latest = runs[-1]
sample, total, capped = db.explore(store, run_ids=[latest["id"]], limit=5)
st.caption(f"The 5 newest of {total:,}{'+' if capped else ''} responses of **{latest['name']}** — filter and search them in the Explorer.")
for r in sample:
    verdict = "unlabelled" if r["refusal"] is None else ("refusal" if r["refusal"] else "compliance")
    body = (r["response"] or r["error"] or "").strip().replace("\n", " ")
    st.markdown(
        f"- **{r['category']}** · {verdict}{' · provider: ' + r['provider_refusal'] if r['provider_refusal'] else ''} — "
        f"_{html.escape(r['prompt'][:140])}_ → {html.escape(body[:240])}{'…' if len(body) > 240 else ''}"
    )
