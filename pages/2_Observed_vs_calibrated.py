"""Observed vs calibrated: per category, the observed refusal rate beside the refusal-token model's
calibrated rate (or the prompt classifier's forecast), a reliability diagram, ECE with its noise
floor, a threshold slider per category and thresholds solved for typed rates."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("Observed vs calibrated")
runs = ui.runs_or_stop(store)
run = ui.pick_run("Run", runs, key="cal_run")

sources = []
token_groups, token_why = db.token_groups(store, run["name"])
if token_groups:
    sources.append("refusal-token model (audit.tokens)")
models = db.prediction_models(store)
sources += [f"prompt-classifier forecast: {m}" for m in models]
if not sources:
    st.info(
        "Nothing to compare with yet: this run has no refusal-token probabilities "
        f"({token_why}) and the store holds no prompt-classifier forecasts "
        "(`refusal-audit forecast ...`)."
    )
    st.stop()
source = st.radio("Calibrated rate from", sources, horizontal=True, key=f"cal_source_{run['id']}")

# Each view: category -> dict(row=..., reliability=(mp, fp, n), curve=(t, r), solve=fn)
views: dict[str, dict] = {}
if source.startswith("refusal-token"):
    rows = db.token_rows(store, run["name"])
    from audit import tokens
    from classifiers.calibration import reliability_curve

    for r in rows:
        g = token_groups.get(r["category"]) if r["category"] != db.ALL else None
        if r["category"] == db.ALL:
            p = np.concatenate([x.p for x in token_groups.values() if len(x.p)])
            y = np.concatenate([x.y for x in token_groups.values() if len(x.p)])
        else:
            p, y = g.p, g.y
        if len(p) == 0:
            continue
        mp, fp, cnt = reliability_curve(y, p, n_bins=10)
        views[r["category"]] = {
            "row": r, "reliability": (np.asarray(mp), np.asarray(fp), np.asarray(cnt)),
            "curve": tokens.threshold_curve(p), "solve": (lambda pp: lambda rate: tokens.solve_threshold(pp, rate))(p),
        }  # fmt: skip
else:
    model = source.split(": ", 1)[1]
    bins = db.calibration_bins(store, run["id"], model)
    if not bins:
        st.info(f"No labelled responses of **{run['name']}** have a forecast by **{model}**.")
        st.stop()
    for r in db.forecast_vs_observed(bins):
        d = bins[r["category"]]
        r["ece_floor"], r["ece_floor_q95"] = db.ece_noise_floor(d)
        views[r["category"]] = {
            "row": r, "reliability": db.reliability_from_bins(d, 15), "curve": db.threshold_curve(d),
            "solve": (lambda dd: lambda rate: db.solve_threshold(dd, rate))(d),
        }  # fmt: skip

table = pd.DataFrame(
    [
        {
            "category": c, "n": v["row"]["n"], "observed": v["row"]["observed_rate"],
            "observed 95% CI": f"{ui.pct(v['row']['observed_ci'][0])} – {ui.pct(v['row']['observed_ci'][1])}",
            "calibrated": v["row"]["expected_rate"],
            "calibrated 95% CI": f"{ui.pct(v['row']['expected_ci'][0])} – {ui.pct(v['row']['expected_ci'][1])}",
            "p-value": v["row"]["p_value"], "ECE": v["row"].get("ece"),
            "ECE noise floor (mean)": v["row"].get("ece_floor"), "ECE floor q95": v["row"].get("ece_floor_q95"),
        }
        for c, v in views.items()
    ]
)  # fmt: skip
long = pd.DataFrame(
    [{"category": c, "series": "observed", "rate": v["row"]["observed_rate"], "ci_low": v["row"]["observed_ci"][0],
      "ci_high": v["row"]["observed_ci"][1], "n": v["row"]["n"]} for c, v in views.items()]
    + [{"category": c, "series": "calibrated", "rate": v["row"]["expected_rate"], "ci_low": v["row"]["expected_ci"][0],
        "ci_high": v["row"]["expected_ci"][1], "n": v["row"]["n"]} for c, v in views.items()]
)  # fmt: skip
st.subheader("Observed vs calibrated rate per category (95% intervals)")
ui.show_chart(ui.rate_chart(long, color="series"))
st.dataframe(
    table, hide_index=True,
    column_config={c: st.column_config.NumberColumn(format="percent") for c in ("observed", "calibrated")}
    | {c: st.column_config.NumberColumn(format="%.3f") for c in ("p-value", "ECE", "ECE noise floor (mean)", "ECE floor q95")},
)  # fmt: skip

st.subheader("Calibration of one category")
cat = st.selectbox("Category", list(views), index=len(views) - 1, key="cal_cat")
v = views[cat]
left, right = st.columns(2)
with left:
    mp, fp, cnt = v["reliability"]
    st.altair_chart(ui.reliability_chart(mp, fp, cnt, f"Reliability diagram — {cat}"), width="stretch")
    ece, floor, q95 = v["row"].get("ece"), v["row"].get("ece_floor"), v["row"].get("ece_floor_q95")
    if ece is not None and floor is not None:
        verdict = "above" if q95 is not None and ece > q95 else "within"
        st.markdown(
            f"**ECE {ece:.3f}** — noise floor {floor:.3f} (95th percentile {q95:.3f}) for a perfectly calibrated "
            f"model on {v['row']['n']:,} samples: {verdict} the noise."
        )
with right:
    t, r = v["curve"]
    thr = st.slider("Threshold on P(refusal)", 0.0, 1.0, 0.5, 0.01, key=f"thr_{cat}")
    at = float(np.interp(thr, np.asarray(t, float), np.asarray(r, float)))
    import altair as alt

    curve = pd.DataFrame({"threshold": np.asarray(t, float), "predicted rate": np.asarray(r, float)})
    line = alt.Chart(curve).mark_line().encode(
        x=alt.X("threshold:Q", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("predicted rate:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
    )
    rule = alt.Chart(pd.DataFrame({"threshold": [thr]})).mark_rule(color="red").encode(x="threshold:Q")
    obs = alt.Chart(pd.DataFrame({"observed": [v["row"]["observed_rate"]]})).mark_rule(strokeDash=[4, 4], color="grey").encode(
        y="observed:Q"
    )
    st.altair_chart((line + rule + obs).properties(height=300, title=f"Threshold → rate — {cat}"), width="stretch")
    st.markdown(f"At threshold **{thr:.2f}**: predicted refusal rate **{ui.pct(at)}** (observed {ui.pct(v['row']['observed_rate'])}, dashed).")

st.subheader("Solve thresholds for wanted rates")
want = st.text_input("Wanted refusal rates (comma-separated, e.g. `10%, 0.25, 50%`)", value="10%, 25%, 50%", key="cal_want")
wanted, bad = [], []
for part in [x.strip() for x in want.split(",") if x.strip()]:
    try:
        val = float(part[:-1]) / 100 if part.endswith("%") else float(part)
        if not 0 <= val <= 1:
            raise ValueError
        wanted.append(val)
    except ValueError:
        bad.append(part)
if bad:
    st.error(f"Not a rate in [0, 1] or 0–100%: {', '.join(bad)}")
if wanted:
    solved = []
    for c, vv in views.items():
        row = {"category": c}
        for w in wanted:
            try:
                row[f"threshold for {ui.pct(w)}"] = vv["solve"](w)
            except ValueError as exc:
                row[f"threshold for {ui.pct(w)}"] = math.nan
                st.caption(f"{c}: {exc}")
        solved.append(row)
    st.dataframe(pd.DataFrame(solved), hide_index=True, column_config={
        k: st.column_config.NumberColumn(format="%.3f") for k in solved[0] if k != "category"})
