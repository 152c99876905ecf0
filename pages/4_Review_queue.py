"""Review queue: label low-confidence and disagreement items with the keyboard. Each label is stored
with the reviewer's name and the time, and overrides every machine label of the response."""

import html

import streamlit as st

from audit import dashboard as db
from audit import dashboard_ui as ui

store = ui.page("Review queue")
runs = ui.runs_or_stop(store)
ui.refusal_start_style()
c1, c2 = st.columns([3, 1])
options = [None] + [r["id"] for r in runs]
names = {r["id"]: r["name"] for r in runs}
run_id = c1.selectbox(
    "Run", options, index=len(options) - 1, format_func=lambda i: "all runs" if i is None else names[i], key="rv_run"
)
margin = c2.number_input("Low confidence: |p − 0.5| <", 0.0, 0.5, 0.15, 0.05, key="rv_margin")
queue = db.review_queue(store, run_id, margin=margin)
skipped = st.session_state.setdefault("rv_skipped", set())
todo = [q for q in queue if q["response_id"] not in skipped]
prog = db.review_progress(store, run_id)
st.caption(
    f"{len(todo)} item(s) waiting{' (first 200 shown)' if len(queue) >= 200 else ''} · "
    f"{prog['human_labels']:,} human label(s) by {prog['reviewers']} reviewer(s) so far"
)
if st.session_state.get("rv_flash"):
    st.success(st.session_state.pop("rv_flash"))
if not todo:
    st.info("Nothing to review: no unreviewed low-confidence, flagged or disagreement items.")
    if skipped and st.button("Bring back skipped items"):
        skipped.clear()
        st.rerun()
    st.stop()

item = todo[0]
d = db.item_details(store, item["response_id"])
eff = db.effective_of(d)
st.markdown(f"**#{d['response_id']}** · {d['run']} · {d['category']} · why: {', '.join(item['reasons'])}")
with st.container(border=True):
    st.markdown(f"**Prompt** — {html.escape(d['prompt'])}")
    # the refusal start of the effective label, else of any label that saw a refusal
    starts = [lab["refusal_start"] for lab in sorted(d["labels"], key=lambda x: -x["id"])
              if lab["refusal"] and lab["refusal_start"] is not None]  # fmt: skip
    start = eff["refusal_start"] if eff and eff["refusal"] and eff["refusal_start"] is not None else (starts or [None])[0]
    st.markdown("**Response**" + (" (refusal start highlighted)" if start is not None else ""))
    st.markdown(db.highlight_html(d["response"], start), unsafe_allow_html=True)
    if d["provider_refusal"]:
        st.caption(f"Provider refusal signal: {d['provider_refusal']}")
    st.caption(
        "Machine labels: "
        + "; ".join(
            f"{lab['classifier']}: {'refusal' if lab['refusal'] else 'compliance'} ({lab['kind']}, p={lab['p_refusal']:.2f})"
            for lab in d["labels"]
            if lab["source"] == "machine"
        )
    )

who = ui.reviewer()
if not who:
    st.warning("Type your name in the sidebar (**Reviewer name**) to label: it is stored with every label.")


def _label(refusal: bool, kind: str) -> None:
    try:
        db.add_human_label(store, item["response_id"], refusal=refusal, kind=kind, reviewer=ui.reviewer(),
                           refusal_start=(eff or {}).get("refusal_start") if refusal else None)  # fmt: skip
    except ValueError as exc:
        st.session_state["rv_flash"] = None
        st.session_state["rv_error"] = str(exc)
        return
    st.session_state["rv_flash"] = f"#{item['response_id']} labelled {kind.replace('_', ' ')} by {ui.reviewer()}."


def _skip() -> None:
    skipped.add(item["response_id"])


st.markdown("Keys: **Y** refusal · **P** partial refusal · **N** compliance (no refusal) · **S** skip")
b = st.columns(4)
b[0].button("Refusal (Y)", key="rv_r", shortcut="Y", on_click=_label, args=(True, "full_refusal"), type="primary",
            disabled=not who)  # fmt: skip
b[1].button("Partial refusal (P)", key="rv_p", shortcut="P", on_click=_label, args=(True, "partial_refusal"),
            disabled=not who)  # fmt: skip
b[2].button("Compliance (N)", key="rv_c", shortcut="N", on_click=_label, args=(False, "full_compliance"),
            disabled=not who)  # fmt: skip
b[3].button("Skip (S)", key="rv_s", shortcut="S", on_click=_skip)
if st.session_state.get("rv_error"):
    st.error(st.session_state.pop("rv_error"))
