"""N-grams: the phrases that most raise and most lower the refusal rate, per category, as charts,
with downloads in CSV, JSON, Markdown and HTML (from the prompt area's n-gram report)."""

import altair as alt
import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.store()
ui.rollup_controls(store)
st.title("N-grams")
runs = db.runs(store)
if not runs:
    ui.no_runs_message()
    st.stop()
run = ui.pick_run("Run", runs, key="ng_run")
table, why = db.ngram_table(store, run["name"])
if table is None:
    st.info(f"N-gram analysis is not available: {why}.")
    st.stop()
df = pd.DataFrame(table)
if df.empty:
    st.info("No n-grams for this run (it needs labelled responses in both directions).")
    st.stop()
cats = sorted(df["category"].unique(), key=lambda c: (c != db.ALL, c))
cat = st.selectbox("Category", cats, key="ng_cat")
top_k = st.slider("Phrases per direction", 5, 30, 15, key="ng_k")
sub = df[df["category"] == cat]
left, right = st.columns(2)
for col, direction, colour in ((left, "refusal", "#d62728"), (right, "compliance", "#1f77b4")):
    part = sub[sub["direction"] == direction].sort_values("score", ascending=False).head(top_k)
    with col:
        st.subheader(f"Towards {direction}")
        if part.empty:
            st.caption("none")
            continue
        chart = (
            alt.Chart(part)
            .mark_bar(color=colour)
            .encode(x=alt.X("score:Q", title="score"), y=alt.Y("ngram:N", sort="-x", title=None),
                    tooltip=[c for c in part.columns if c != "category"])  # fmt: skip
            .properties(height=max(150, 20 * len(part)))
        )
        st.altair_chart(chart, width="stretch")
st.subheader("Download")
files = db.ngram_files(store, run["name"])
if files:
    cols = st.columns(len(files))
    for c, (name, (data, mime)) in zip(cols, sorted(files.items())):
        c.download_button(name.rsplit(".", 1)[-1].upper(), data, name, mime, key=f"ng-{name}")
else:
    ui.download_buttons(df, f"ngrams-{run['name']}", f"N-grams of {run['name']}")
with st.expander("All n-grams"):
    st.dataframe(df, hide_index=True)
