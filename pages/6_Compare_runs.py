"""Compare runs: two runs (or the latest runs of two targets) side by side, per category, with a
two-proportion test, Holm's correction over the categories, and significant drifts highlighted."""

import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("Compare runs")
runs = db.runs(store)
if len(runs) < 2:
    st.info("Comparing needs at least two runs in the store.")
    st.stop()
mode = st.radio("Compare", ["two runs", "two targets (latest run of each)"], horizontal=True, key="cmp_mode")
c1, c2, c3 = st.columns([2, 2, 1])
if mode == "two runs":
    a = ui.pick_run("Run A (baseline)", runs, key="cmp_a", index=len(runs) - 2, where=c1)
    b = ui.pick_run("Run B", runs, key="cmp_b", index=len(runs) - 1, where=c2)
    a_id, b_id, a_name, b_name = a["id"], b["id"], a["name"], b["name"]
else:
    targets = sorted({r["target"] for r in runs})
    if len(targets) < 2:
        st.info("Only one target has runs.")
        st.stop()
    ta = c1.selectbox("Target A (baseline)", targets, index=0, key="cmp_ta")
    tb = c2.selectbox("Target B", targets, index=1, key="cmp_tb")
    a_id, b_id = db.latest_run_of_target(store, ta), db.latest_run_of_target(store, tb)
    names = {r["id"]: r["name"] for r in runs}
    a_name, b_name = f"{ta} ({names[a_id]})", f"{tb} ({names[b_id]})"
alpha = c3.number_input("α (family-wise)", 0.001, 0.2, 0.05, 0.005, format="%.3f", key="cmp_alpha")
if a_id == b_id:
    st.warning("Pick two different runs.")
    st.stop()
rows = db.compare_runs(store, a_id, b_id, alpha=alpha)
if not rows:
    st.info("Neither run has labelled responses yet.")
    st.stop()
sig = [r for r in rows if r["significant"] and r["category"] != db.ALL]
if sig:
    st.error(
        f"**{len(sig)} significant drift(s)** (Holm-adjusted p < {alpha:g}): "
        + ", ".join(f"{r['category']} ({'+' if r['diff'] > 0 else ''}{100 * r['diff']:.1f} pts)" for r in sig)
    )
else:
    st.success(f"No significant per-category drift at family-wise α = {alpha:g} (Holm).")
long = pd.DataFrame(
    [{"category": r["category"], "run": f"A: {a_name}", "rate": r["rate_a"], "ci_low": r["ci_a"][0],
      "ci_high": r["ci_a"][1], "n": r["n_a"]} for r in rows if r["n_a"]]
    + [{"category": r["category"], "run": f"B: {b_name}", "rate": r["rate_b"], "ci_low": r["ci_b"][0],
        "ci_high": r["ci_b"][1], "n": r["n_b"]} for r in rows if r["n_b"]]
)  # fmt: skip
ui.show_chart(ui.rate_chart(long, color="run", title="Refusal rate per category (95% Wilson intervals)"))
df = pd.DataFrame(
    [
        {"category": r["category"], "n A": r["n_a"], "rate A": r["rate_a"], "n B": r["n_b"], "rate B": r["rate_b"],
         "difference (B − A)": r["diff"], "p-value": r["p_value"], "Holm p": r["p_holm"],
         "significant": r["significant"]}
        for r in rows
    ]
)  # fmt: skip


def _highlight(row):
    colour = "background-color: #ffd6d6" if row["significant"] else ""
    return [colour] * len(row)


st.dataframe(
    df.style.apply(_highlight, axis=1).format(
        {"rate A": "{:.1%}", "rate B": "{:.1%}", "difference (B − A)": "{:+.1%}", "p-value": "{:.4f}", "Holm p": "{:.4f}"},
        na_rep="–",
    ),
    hide_index=True,
    width="stretch",
)
st.caption("Two-sided pooled two-proportion z-test per category; Holm–Bonferroni over the categories "
           "(the (all) row is tested on its own). Highlighted rows: significant drifts.")  # fmt: skip
