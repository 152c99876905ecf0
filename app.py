"""Refusal-audit dashboard (Streamlit multipage entry): ``streamlit run app.py``.

The store comes from ``REFUSAL_AUDIT_DB`` (a SQLAlchemy URL or a SQLite path; default
``./refusal-audit.db``). Set ``REFUSAL_AUDIT_DASHBOARD_PASSWORD_HASH`` (see ``python -m audit.auth``)
to require a password on a shared deployment.
"""

from __future__ import annotations

import time

import streamlit as st

PAGES = [
    {"path": "pages/1_Overview.py", "title": "Overview", "url": "overview", "icon": ":material/dashboard:"},
    {"path": "pages/2_Observed_vs_calibrated.py", "title": "Observed vs calibrated", "url": "calibration",
     "icon": ":material/balance:"},
    {"path": "pages/3_Explorer.py", "title": "Explorer", "url": "explorer", "icon": ":material/search:"},
    {"path": "pages/4_Review_queue.py", "title": "Review queue", "url": "review", "icon": ":material/rule:"},
    {"path": "pages/5_N-grams.py", "title": "N-grams", "url": "ngrams", "icon": ":material/format_quote:"},
    {"path": "pages/6_Compare_runs.py", "title": "Compare runs", "url": "compare", "icon": ":material/compare_arrows:"},
    {"path": "pages/7_Probes.py", "title": "Probes", "url": "probes", "icon": ":material/science:"},
]  # fmt: skip


def main() -> None:
    from audit import auth

    started = time.perf_counter()
    st.set_page_config(page_title="Refusal audit", page_icon=":material/policy:", layout="wide")
    try:
        user = auth.login_gate(st)
    except ValueError as exc:  # unreadable secrets file
        st.error(str(exc))
        st.stop()
    if user is None:  # a password is configured and nobody has signed in: every URL shows the login
        st.navigation([st.Page(lambda: None, title="Sign in", url_path="signin")], position="hidden").run()
        st.stop()
    nav = st.navigation(
        [st.Page(p["path"], title=p["title"], url_path=p["url"], icon=p["icon"], default=i == 0)
         for i, p in enumerate(PAGES)]  # fmt: skip
    )
    nav.run()
    # server-side time of this script run (queries + building every element); read by bench/
    st.session_state["_render_seconds"] = time.perf_counter() - started


if __name__ == "__main__":
    main()
