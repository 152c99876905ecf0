"""Streamlit helpers shared by the dashboard pages: the store, run pickers and charts.

Queries go through :mod:`audit.dashboard`; this module only draws.
"""

from __future__ import annotations

import math
import os

import pandas as pd
import streamlit as st

from audit import dashboard as db
from audit.store import Store, open_store, resolve_url


@st.cache_resource(show_spinner=False)
def _open(url: str) -> Store:
    return open_store(url)


def store() -> Store:
    """The store named by ``REFUSAL_AUDIT_DB`` (default ``./refusal-audit.db``), opened once per process."""
    return _open(resolve_url(os.environ.get("REFUSAL_AUDIT_DB")))


def reviewer() -> str:
    return st.session_state.get("reviewer", "")


def safe_url(url: str) -> str:
    """The store URL without any password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never show a malformed URL with a secret in it
        return "(store)"


def run_label(run: dict) -> str:
    return f"{run['name']} · {run['target']}"


def pick_run(label: str, runs: list[dict], key: str, index: int | None = None, where=None) -> dict | None:
    if not runs:
        return None
    idx = len(runs) - 1 if index is None else index
    return (where or st).selectbox(label, runs, index=idx, format_func=run_label, key=key)


def no_runs_message() -> None:
    st.info(
        "No runs in this store yet. Collect responses first "
        "(`refusal-audit collect ...`) or open the demo store (`make dashboard`)."
    )


def pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def rate_chart(df: pd.DataFrame, *, color: str = "run", title: str = "", lo: str = "ci_low", hi: str = "ci_high",
               rate: str = "rate", x_title: str = "refusal rate (95% CI)"):  # fmt: skip
    """Dot-and-whisker chart: ``rate`` per category with its 95% interval, one colour per ``color``."""
    import altair as alt

    if df.empty:
        return None
    base = alt.Chart(df).encode(
        y=alt.Y("category:N", title=None, sort=None, axis=alt.Axis(labelOverlap=False, labelLimit=250)),
        yOffset=alt.YOffset(f"{color}:N"),
        color=alt.Color(f"{color}:N", title=color),
    )
    tooltip = ["category:N", f"{color}:N", alt.Tooltip(f"{rate}:Q", format=".1%"),
               alt.Tooltip(f"{lo}:Q", format=".1%"), alt.Tooltip(f"{hi}:Q", format=".1%")]  # fmt: skip
    if "n" in df.columns:
        tooltip.append("n:Q")
    whisk = base.mark_rule(strokeWidth=2).encode(
        x=alt.X(f"{lo}:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%", title=x_title)),
        x2=f"{hi}:Q",
    )
    dots = base.mark_point(filled=True, size=60).encode(x=f"{rate}:Q", tooltip=tooltip)
    height = max(120, df["category"].nunique() * (12 * df[color].nunique() + 14))
    return (whisk + dots).properties(height=height, title=title)


def show_chart(chart) -> None:
    if chart is not None:
        st.altair_chart(chart, width="stretch")


def reliability_chart(mean_p, frac, counts, title: str):
    """Reliability diagram (Vega-Lite): observed rate against mean forecast per bin, dot size = count,
    with the diagonal of perfect calibration."""
    import altair as alt
    import numpy as np

    mean_p, frac, counts = (np.asarray(x, dtype=float) for x in (mean_p, frac, counts))
    m = counts > 0
    df = pd.DataFrame({"forecast": mean_p[m], "observed": frac[m], "count": counts[m]})
    diag = alt.Chart(pd.DataFrame({"forecast": [0.0, 1.0], "observed": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="grey"
    ).encode(x="forecast:Q", y="observed:Q")
    axis = {"scale": alt.Scale(domain=[0, 1])}
    line = alt.Chart(df).mark_line(point=False).encode(
        x=alt.X("forecast:Q", title="mean forecast P(refusal)", **axis),
        y=alt.Y("observed:Q", title="observed refusal rate", **axis),
    )
    dots = alt.Chart(df).mark_circle(opacity=0.7).encode(
        x="forecast:Q", y="observed:Q", size=alt.Size("count:Q", legend=None),
        tooltip=[alt.Tooltip("forecast:Q", format=".2f"), alt.Tooltip("observed:Q", format=".2f"), "count:Q"],
    )  # fmt: skip
    return (diag + line + dots).properties(height=320, title=title)


def download_buttons(df: pd.DataFrame, stem: str, title: str) -> None:
    """CSV, JSON, Markdown and HTML downloads of ``df``."""
    cols = st.columns(4)
    cols[0].download_button("CSV", df.to_csv(index=False), f"{stem}.csv", "text/csv", key=f"{stem}-csv")
    cols[1].download_button("JSON", df.to_json(orient="records", indent=2), f"{stem}.json", "application/json",
                            key=f"{stem}-json")  # fmt: skip
    cols[2].download_button("Markdown", to_markdown(df, title), f"{stem}.md", "text/markdown", key=f"{stem}-md")
    html = f"<!doctype html><meta charset='utf-8'><title>{title}</title><h1>{title}</h1>" + df.to_html(index=False)
    cols[3].download_button("HTML", html, f"{stem}.html", "text/html", key=f"{stem}-html")


def to_markdown(df: pd.DataFrame, title: str = "") -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(cell(c) for c in df.columns) + " |")
    lines.append("|" + "---|" * len(df.columns))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def rollup_controls(s: Store) -> None:
    """Sidebar: which store, and a button that recounts the aggregates from scratch."""
    with st.sidebar:
        st.caption(f"Store: `{safe_url(s.url)}`")
        if st.button("Recount aggregates", help="Rebuild the cached per-category counts from every row"):
            with st.spinner("recounting…"):
                db.refresh_rollup(s, full=True)
                db.clear_cache()
            st.rerun()


def page(title: str) -> Store:
    """Start a page: open the store, add the sidebar controls and the title; returns the store."""
    s = store()
    rollup_controls(s)
    st.title(title)
    return s


def runs_or_stop(s: Store) -> list[dict]:
    """The store's runs; on an empty store, say so and stop the page."""
    runs = db.runs(s)
    if not runs:
        no_runs_message()
        st.stop()
    return runs


def refusal_start_style() -> None:
    """CSS for the ``<mark class="refusal-start">`` that highlights where a refusal starts."""
    st.markdown(
        "<style>mark.refusal-start{background:#ffd54f;padding:0 2px;border-radius:3px}</style>", unsafe_allow_html=True
    )
