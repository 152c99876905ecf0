"""N-grams: the phrases most indicative of refusal and of compliance, per category, as charts, with
downloads in CSV, JSON, Markdown and HTML (statistics from ``classifiers.ngrams``)."""

import altair as alt
import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("N-grams")
runs = ui.runs_or_stop(store)
c1, c2, c3 = st.columns([3, 2, 1])
run = ui.pick_run("Run", runs, key="ng_run", where=c1)
field = c2.radio("Text", ["prompts", "responses"], horizontal=True, key="ng_field")
min_count = c3.number_input("Min. documents", 1, 100, 3, key="ng_min")
cats = [r["category"] for r in db.category_table(store, [run["id"]]) if r["n"] > 0]
if not cats:
    st.info("This run has no labelled responses yet.")
    st.stop()
c4, c5 = st.columns([3, 3])
cat = c4.selectbox("Category", cats, index=len(cats) - 1, key="ng_cat")
top_k = c5.slider("Phrases per direction", 5, 30, 15, key="ng_k")
with st.spinner("counting n-grams…"):
    result, why = db.ngram_table(store, run["id"], field, int(min_count), cat)
if result is None:
    st.info(f"N-gram analysis is not available: {why}.")
    st.stop()
df = pd.DataFrame(result["rows"])
sample = "" if result["documents"] == result["of"] else f" (a sample of {result['documents']:,} of {result['of']:,})"
st.caption(
    f"Log-odds ratio with an informative Dirichlet prior (Monroe et al. 2008): z > 0 points to refusal, "
    f"z < 0 to compliance. {result['documents']:,} labelled {field} in {cat}{sample}."
)
if df.empty:
    st.info("No n-grams here: the category needs labelled items of both classes (refusal and compliance).")
    st.stop()
left, right = st.columns(2)
for col, direction, colour in ((left, "refusal", "#d62728"), (right, "compliance", "#1f77b4")):
    part = df[df["direction"] == direction].sort_values("score", ascending=False).head(top_k)
    with col:
        st.subheader(f"Towards {direction}")
        if part.empty:
            st.caption("none")
            continue
        chart = (
            alt.Chart(part)
            .mark_bar(color=colour)
            .encode(x=alt.X("score:Q", title="|z| (log-odds z-score)"), y=alt.Y("ngram:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False, labelLimit=300)),
                    tooltip=["ngram", "docs_refusal", "docs_compliance", alt.Tooltip("z:Q", format=".2f"),
                             alt.Tooltip("log_odds:Q", format=".2f")])  # fmt: skip
            .properties(height=max(150, 24 * len(part)))
        )
        st.altair_chart(chart, width="stretch")
st.subheader("Download")
cols = [c for c in ("category", "direction", "ngram", "n", "docs", "docs_refusal", "docs_compliance",
                    "count_refusal", "count_compliance", "log_odds", "se", "z", "lr_coef") if c in df.columns]  # fmt: skip
stem = f"ngrams-{run['name']}-{field}-{cat}".replace("(", "").replace(")", "").replace(" ", "_")
ui.download_buttons(df[cols], stem, f"N-grams of {run['name']} ({field}, {cat})")
with st.expander("All n-grams"):
    st.dataframe(df[cols], hide_index=True)
