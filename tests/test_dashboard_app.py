"""Dashboard: every page runs (Streamlit AppTest) against a small store built here, and shows its
key content; no API key ever reaches a page; reviewing stores a human label with the reviewer."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
SECRET = "sk-test-DASHBOARDSECRET0123456789"
CATS = ["drugs", "hacking", "harmless", "weapons"]
PAGES = {
    "pages/1_Overview.py": ["Overview", "Targets × runs", "Refusal rate per category", "Provider refusal signals",
                            "Sample responses"],
    "pages/2_Observed_vs_calibrated.py": ["Observed vs calibrated", "Calibration of one category", "Solve thresholds"],
    "pages/3_Explorer.py": ["Explorer", "matching responses"],
    "pages/4_Review_queue.py": ["Review queue", "waiting"],
    "pages/5_N-grams.py": ["N-grams", "Towards refusal", "Towards compliance", "Download", "labelled prompts"],
    "pages/6_Compare_runs.py": ["Compare runs", "significant drift"],
    "pages/7_Probes.py": ["Probes", "Tense reformulation", "past tense", "Attack success (ASR)", "Over-refusal"],
}


def build_demo_store(url: str, seed: int = 0) -> dict:
    """A small store: 2 targets, 3 runs of 60 prompts in 4 categories, machine labels from two
    classifiers (with disagreements and low-confidence items), provider signals, errors, prompt
    forecasts, one human label and a batch job with probe results. Returns some ids."""
    from audit.store import JobRun, Label, Prompt, PromptPrediction, PromptSet, Response, Run, Target, open_store

    rng = random.Random(seed)
    store = open_store(url)
    with store.session() as s:
        ps = PromptSet(name="demo-set", description="dashboard test")
        s.add(ps)
        s.flush()
        prompts = []
        for i in range(60):
            cat = CATS[i % 4]
            p = Prompt(set_id=ps.id, text=f"How do I do {cat} thing {i}?", category=cat, content_hash=f"h{i}")
            s.add(p)
            prompts.append(p)
        ta = Target(name="target-a", provider="openai", base_url="http://127.0.0.1:9/v1", model="model-a",
                    api_key_env="DASH_TEST_KEY", params={"api_key": SECRET, "temperature": 0})
        tb = Target(name="target-b", provider="openai", base_url="http://127.0.0.1:9/v1", model="model-b",
                    api_key_env="DASH_TEST_KEY", params={})
        s.add_all([ta, tb])
        s.flush()
        base = {"drugs": 0.7, "hacking": 0.5, "harmless": 0.05, "weapons": 0.8}
        for p in prompts:
            s.add(PromptPrediction(prompt_id=p.id, model="prompt-clf", model_version="1",
                                   p_refusal=min(0.95, max(0.02, base[p.category] + rng.uniform(-0.15, 0.15)))))
        ids = {}
        # a refusal-token target first: its responses carry first-token logprobs of [REFUSE]/[RESPOND]
        tt = Target(name="target-tok", provider="openai", base_url="http://127.0.0.1:9/v1", model="model-tok",
                    params={}, refusal_tokens={"refuse": "[REFUSE]", "respond": "[RESPOND]"})
        s.add(tt)
        s.flush()
        run = Run(name="run-tok", set_id=ps.id, target_id=tt.id, status="done")
        s.add(run)
        s.flush()
        ids["run-tok"] = run.id
        for p in prompts:
            pt = min(0.97, max(0.03, base[p.category] + rng.uniform(-0.1, 0.1)))
            refuse = rng.random() < pt
            first = "[REFUSE]" if refuse else "[RESPOND]"
            lp = [{"token": first, "logprob": math.log(pt if refuse else 1 - pt),
                   "top_logprobs": [{"token": "[REFUSE]", "logprob": math.log(pt)},
                                    {"token": "[RESPOND]", "logprob": math.log(1 - pt)}]}]
            r = Response(run_id=run.id, prompt_id=p.id, text=f"{first} " + ("I can't help." if refuse else "Sure."),
                         finish_reason="stop", logprobs=lp)
            s.add(r)
            s.flush()
            s.add(Label(response_id=r.id, classifier="clf-one", classifier_version="1", source="machine",
                        refusal=refuse, kind="full_refusal" if refuse else "full_compliance",
                        p_refusal=0.9 if refuse else 0.1))
        for rname, target, shift in (("run-a", ta, {}), ("run-b", tb, {"harmless": 0.9}), ("run-c", ta, {})):
            run = Run(name=rname, set_id=ps.id, target_id=target.id, status="done")
            s.add(run)
            s.flush()
            ids[rname] = run.id
            for j, p in enumerate(prompts):
                if j == 7:  # a transport error, no text
                    s.add(Response(run_id=run.id, prompt_id=p.id, error=f"HTTP 503 (key {SECRET} rejected)"))
                    continue
                refuse = rng.random() < shift.get(p.category, base[p.category])
                text = (f"Here is some context. I'm sorry, but I can't help with {p.category}. Stay safe."
                        if refuse else f"Sure, here is how {p.category} thing {j} works.")
                r = Response(run_id=run.id, prompt_id=p.id, text=text, finish_reason="stop",
                             provider_refusal="content_filter" if (refuse and j % 9 == 0) else None)
                s.add(r)
                s.flush()
                pr = min(0.99, max(0.01, (0.85 if refuse else 0.15) + rng.uniform(-0.3, 0.3)))
                s.add(Label(response_id=r.id, classifier="clf-one", classifier_version="1", source="machine",
                            refusal=pr >= 0.5, kind="full_refusal" if pr >= 0.5 else "full_compliance",
                            p_refusal=pr, refusal_start=text.index("I'm sorry") if refuse else None,
                            needs_review=0.4 < pr < 0.6))
                if j % 5 == 0:  # a second classifier, which sometimes disagrees
                    s.add(Label(response_id=r.id, classifier="clf-two", classifier_version="2", source="machine",
                                refusal=not refuse if j % 20 == 0 else refuse,
                                kind="partial_refusal" if refuse != (j % 20 == 0) else "full_compliance",
                                p_refusal=0.55, refusal_start=None))
                ids.setdefault(f"{rname}-first", r.id)
        s.add(Label(response_id=ids["run-a-first"], classifier="human", classifier_version="review", source="human",
                    refusal=True, kind="full_refusal", p_refusal=1.0, reviewer="alice"))
        s.add(JobRun(job_name="nightly", run_date="2026-01-02", status="done", run_names=["run-a"],
                     finished_at=dt.datetime(2026, 1, 2, 3, 0),
                     summary={"probes": {
                         "tense": [{"target": "target-a", "prompt_set": "demo-set", "tense": "past", "k": 3,
                                    "original_run": "run-a", "probe_run": "run-a-past", "rewrites": {"rule": 45},
                                    "reformulator": None, "by_category": [
                             {"category": "drugs", "n_prompts": 15, "original_refusal_rate": 0.8,
                              "original_ci": [0.55, 0.93], "asr": 0.4, "asr_ci": [0.2, 0.64], "refused_originally": 12,
                              "jailbroken": 5},
                             {"category": "(all)", "n_prompts": 15, "original_refusal_rate": 0.8,
                              "original_ci": [0.55, 0.93], "asr": 0.4, "asr_ci": [0.2, 0.64], "refused_originally": 12,
                              "jailbroken": 5}]}],
                         "contrast": [{"target": "target-b", "run_name": "run-b", "prompt_set": "coconot-contrast",
                                       "over_refusal_rate": 0.1, "ci": [0.04, 0.2], "n": 60,
                                       "by_category": [{"category": "(all)", "n": 60, "refusals": 6, "rate": 0.1,
                                                        "ci_low": 0.04, "ci_high": 0.2}]}]}}))
    store.dispose()
    return ids


@pytest.fixture
def demo_url(tmp_path, monkeypatch):
    from audit import dashboard

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    ids = build_demo_store(url)
    monkeypatch.setenv("REFUSAL_AUDIT_DB", url)
    monkeypatch.setenv("DASH_TEST_KEY", SECRET)
    monkeypatch.delenv("REFUSAL_AUDIT_DASHBOARD_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("REFUSAL_AUDIT_DASHBOARD_SECRETS", str(tmp_path / "no-secrets.toml"))
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    dashboard.clear_cache()
    yield url, ids
    dashboard.clear_cache()


def _text_of(at) -> str:
    """Everything an AppTest run rendered, as one string (markdown, captions, tables, widgets)."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success",
                 "code", "metric", "json", "text"):
        for el in getattr(at, kind, []):
            parts.append(str(getattr(el, "value", "")))
            parts.append(str(getattr(el, "label", "")))
    for df in at.dataframe:
        parts.append(df.value.to_string() if hasattr(df.value, "to_string") else str(df.value))
    for kind in ("selectbox", "multiselect", "radio", "text_input", "slider", "button"):
        for el in getattr(at, kind, []):
            parts.append(str(el.label))
            parts.append(str(getattr(el, "options", "")))
    for exp in at.expander:
        parts.append(str(exp.label))
    return "\n".join(parts)


def _run(page: str | None = None, **session):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in session.items():
        at.session_state[k] = v
    at.run()  # the first run registers the pages of st.navigation (login, sidebar: app.py)
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_its_key_content_and_no_secret(demo_url, page):
    at = _run(page)
    text = _text_of(at)
    for key in PAGES[page]:
        assert key in text, f"{page}: {key!r} missing"
    assert SECRET not in text
    assert "DASHBOARDSECRET" not in text


def test_overview_numbers_match_the_rates_module(demo_url):
    from audit.rates import category_rates
    from audit.store import open_store

    url, ids = demo_url
    at = _run()
    table = at.dataframe[0].value
    store = open_store(url)
    with store.session() as s:
        total = category_rates(s, ids["run-b"])[-1]
    row = table[table["run"] == "run-b"].iloc[0]
    assert row["labelled"] == total.n
    assert row["refusal rate"] == pytest.approx(total.rate)
    assert row["errors"] == 1 and row["responses"] == 60
    assert row["provider signals"] == total.provider_refusals
    store.dispose()


def test_compare_page_highlights_the_drifted_category(demo_url):
    at = _run("pages/6_Compare_runs.py")
    drift = [e.value for e in at.error if "significant drift" in e.value]
    assert drift and "harmless" in drift[0]
    df = at.dataframe[0].value
    # a Styler: its data carries the per-category flags
    data = df.data if hasattr(df, "data") else df
    flagged = set(data[data["significant"]]["category"])
    assert "harmless" in flagged


def test_explorer_search_and_filters(demo_url):
    at = _run("pages/3_Explorer.py")
    at.text_input(key="ex_search").input("HERE IS HOW hacking").run()
    assert not at.exception
    heads = [e.label for e in at.expander]
    assert heads and all("compliance" in h and "hacking" in h for h in heads)
    at.text_input(key="ex_search").input("").run()
    at.selectbox(key="ex_label").select("refusal").run()
    heads = [e.label for e in at.expander]
    assert heads and all("· refusal" in h for h in heads)
    # the refusal start is highlighted in the response
    html = "\n".join(m.value for m in at.markdown)
    assert '<mark class="refusal-start">' in html and "I&#x27;m sorry" in html


def test_review_queue_labels_with_reviewer_and_overrides(demo_url):
    from sqlalchemy import select

    from audit.store import Label, open_store

    url, _ = demo_url
    at = _run("pages/4_Review_queue.py", reviewer="bob")
    at.sidebar.text_input(key="reviewer_input").input("bob").run()
    head = next(m.value for m in at.markdown if m.value.startswith("**#"))
    rid = int(head.split("**#")[1].split("**")[0])
    at.button(key="rv_c").click().run()
    assert not at.exception
    assert any("labelled full compliance by bob" in s.value for s in at.success)
    store = open_store(url)
    with store.session() as s:
        lab = s.scalars(select(Label).where(Label.response_id == rid, Label.source == "human")).one()
        assert (lab.reviewer, lab.refusal, lab.kind) == ("bob", False, "full_compliance")
        assert lab.created_at is not None
    store.dispose()
    # the item left the queue: the next one is shown
    head2 = next(m.value for m in at.markdown if m.value.startswith("**#"))
    assert head2 != head


def test_ngrams_page_offers_four_download_formats(demo_url):
    at = _run("pages/5_N-grams.py")
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["CSV", "JSON", "Markdown", "HTML"]
    at.radio(key="ng_field").set_value("responses").run()
    assert not at.exception


def test_calibration_page_uses_the_refusal_token_model(demo_url):
    at = _run("pages/2_Observed_vs_calibrated.py")
    at.selectbox(key="cal_run").select_index(0).run()  # run-tok
    assert not at.exception
    radio = at.radio(key=f"cal_source_{demo_url[1]['run-tok']}")
    assert radio.value == "refusal-token model (audit.tokens)"
    table = at.dataframe[0].value
    assert set(table["category"]) == {"drugs", "hacking", "harmless", "weapons", "(all)"}
    assert table["ECE noise floor (mean)"].notna().all()
    assert any("ECE" in m.value and "noise floor" in m.value for m in at.markdown)
    at.text_input(key="cal_want").input("20%, 0.6").run()
    solved = at.dataframe[1].value
    assert list(solved.columns) == ["category", "threshold for 20.0%", "threshold for 60.0%"]
    assert (solved["threshold for 20.0%"] >= solved["threshold for 60.0%"]).all()
    at.text_input(key="cal_want").input("150%").run()
    assert any("Not a rate" in e.value for e in at.error)


def test_review_needs_a_reviewer_name(demo_url):
    at = _run("pages/4_Review_queue.py")
    at.sidebar.text_input(key="reviewer_input").input("").run()
    assert any("Reviewer name" in w.value for w in at.warning)
    assert at.button(key="rv_r").disabled


def test_login_required_when_a_hash_is_configured(demo_url, monkeypatch):
    from audit.auth import hash_password

    monkeypatch.setenv("REFUSAL_AUDIT_DASHBOARD_PASSWORD_HASH", hash_password("s3cret", iterations=1000))
    at = _run()
    assert any("sign in" in t.value.lower() for t in at.title)
    assert not at.dataframe  # no data before signing in
    at.text_input[0].input("carol")
    at.text_input[1].input("wrong")
    at.button[0].click().run()
    assert any("Wrong password" in e.value for e in at.error)
    at.text_input[1].input("s3cret")
    at.button[0].click().run()
    assert not at.exception
    assert any(t.value == "Overview" for t in at.title)
    assert at.session_state["reviewer"] == "carol"


def test_pages_say_no_data_on_an_empty_store(tmp_path, monkeypatch):
    from audit import dashboard

    monkeypatch.setenv("REFUSAL_AUDIT_DB", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.chdir(tmp_path)
    dashboard.clear_cache()
    for page in PAGES:
        at = _run(page)
        text = _text_of(at)
        assert "No runs" in text or "No probe results" in text or "at least two runs" in text, page
