"""Explorer: filter responses by run, category, label, kind, confidence and provider signal, search
their text, and read each item with its refusal start highlighted, every label and the prompt
prediction."""

import html

import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("Explorer")
runs = ui.runs_or_stop(store)
ui.refusal_start_style()

names = {r["id"]: r["name"] for r in runs}
signals = sorted({s["signal"] for s in db.provider_signals(store)})
with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    run_ids = c1.multiselect("Run", list(names), default=[runs[-1]["id"]], format_func=names.get, key="ex_runs")
    cats = c2.multiselect("Category", db.categories(store), key="ex_cats")
    label = c3.selectbox("Label", ["any", "refusal", "compliance", "unlabelled", "human"], key="ex_label")
    c4, c5, c6 = st.columns(3)
    kinds = c4.multiselect("Kind", list(db.KINDS), key="ex_kinds")
    p_lo, p_hi = c5.slider("Confidence: P(refusal) of the label", 0.0, 1.0, (0.0, 1.0), 0.05, key="ex_conf")
    provider = c6.selectbox("Provider signal", ["any", "none", "any signal", "error", *signals], key="ex_provider")
    search = st.text_input("Search prompt and response text", key="ex_search", placeholder="e.g. cannot assist")

page_size = 20
sig = (tuple(run_ids), tuple(cats), label, tuple(kinds), p_lo, p_hi, provider, search)
if st.session_state.get("ex_sig") != sig:  # new filters: back to the first page
    st.session_state["ex_sig"] = sig
    st.session_state["ex_page"] = 1
page = st.session_state.get("ex_page", 1)
rows, total, capped = db.explore(
    store, run_ids=run_ids, categories=cats, label=label, kinds=kinds, p_min=p_lo, p_max=p_hi,
    provider=provider, search=search, limit=page_size, offset=(page - 1) * page_size,
)  # fmt: skip
pages = max(1, -(-total // page_size))
st.caption(f"{total:,}{'+' if capped else ''} matching responses · page {page} of {pages:,}{'+' if capped else ''}")
if not rows:
    st.info("No responses match these filters.")
for i, r in enumerate(rows):
    verdict = "unlabelled" if r["refusal"] is None else ("refusal" if r["refusal"] else "compliance")
    signal = f" · provider: {r['provider_refusal']}" if r["provider_refusal"] else ""
    err = " · error" if r["error"] else ""
    head = f"#{r['response_id']} · {r['run']} · {r['category']} · {verdict}{signal}{err}"
    with st.expander(head, expanded=i == 0):
        d = db.item_details(store, r["response_id"])
        st.markdown(f"**Prompt** — {html.escape(d['prompt'])}")
        eff = db.effective_of(d)
        start = eff["refusal_start"] if eff and eff["refusal"] else None
        st.markdown("**Response**" + (" (refusal start highlighted)" if start is not None else ""))
        st.markdown(f"<div class='response'>{db.highlight_html(d['response'], start)}</div>", unsafe_allow_html=True)
        if d["provider_refusal"]:
            st.warning(f"Provider refusal signal: `{d['provider_refusal']}` {d['provider_refusal_detail'] or ''}")
        if d["error"]:
            st.error(f"Error: {d['error']}")
        lab_lines = []
        for lab in d["labels"]:
            who = f"reviewer **{lab['reviewer']}**" if lab["source"] == "human" else f"{lab['classifier']} v{lab['version']}"
            flag = " · needs review" if lab["needs_review"] else ""
            star = " ← effective" if eff and lab["id"] == eff["id"] else ""
            lab_lines.append(
                f"- {lab['source']} · {who} · **{'refusal' if lab['refusal'] else 'compliance'}** ({lab['kind']}) · "
                f"p={lab['p_refusal']:.2f} · start={lab['refusal_start']}{flag} · {lab['created_at']:%Y-%m-%d %H:%M}{star}"
            )
        st.markdown("**Labels**\n" + ("\n".join(lab_lines) if lab_lines else "\n_none yet_"))
        preds = d["predictions"]
        st.markdown(
            "**Prompt prediction** — "
            + (", ".join(f"{p['model']} v{p['version']}: P(refusal)={p['p_refusal']:.2f}" for p in preds) if preds else "_none_")
        )

c1, c2, _ = st.columns([1, 1, 6])
if c1.button("◀ Previous", disabled=page <= 1, key="ex_prev"):
    st.session_state["ex_page"] = page - 1
    st.rerun()
if c2.button("Next ▶", disabled=page >= pages, key="ex_next"):
    st.session_state["ex_page"] = page + 1
    st.rerun()
