"""The dashboard's query module: SQL aggregates agree with ``audit.rates``, stay right as rows are
appended, relabelled and deleted, the cache key follows the store, human labels override, and the
calibration numbers agree with ``classifiers.calibration``."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import delete, select

from test_dashboard_app import SECRET, build_demo_store


@pytest.fixture
def demo(db_url):
    from audit import dashboard
    from audit.store import open_store

    ids = build_demo_store(db_url)
    store = open_store(db_url)
    dashboard.clear_cache()
    yield store, ids
    dashboard.clear_cache()
    store.dispose()


def _expected(store, run_id):
    from audit.rates import category_rates

    with store.session() as s:
        return {r.category: (r.n, r.refusals, r.provider_refusals, r.errors, r.human_labels) for r in category_rates(s, run_id)}


def _got(store, run_id):
    from audit import dashboard

    return {
        r["category"]: (r["n"], r["refusals"], r["provider_refusals"], r["errors"], r["human_labels"])
        for r in dashboard.category_table(store, [run_id])
    }


def _check_all(store, ids):
    for name in ("run-a", "run-b", "run-c"):
        assert _got(store, ids[name]) == _expected(store, ids[name]), name


def test_category_table_matches_rates_through_appends_relabels_and_deletes(demo):
    from audit import dashboard
    from audit.store import Label, Response

    store, ids = demo
    _check_all(store, ids)
    assert dashboard.refresh_rollup(store) == "fresh"
    # a human label that flips a machine verdict, and a new machine label
    first = ids["run-b-first"]
    with store.session() as s:
        machine = s.scalars(select(Label).where(Label.response_id == first)).all()
        flipped = not machine[-1].refusal
    dashboard.add_human_label(store, first, refusal=flipped, reviewer="dora")
    with store.session() as s:
        s.add(Label(response_id=first + 1, classifier="clf-three", classifier_version="1", source="machine",
                    refusal=True, kind="full_refusal", p_refusal=0.9))
        run_c = ids["run-c"]
        p_id = s.scalar(select(Response.prompt_id).where(Response.id == first))
        # an appended response of run-c for a prompt it had errored on is not allowed (unique key):
        # append to run-b's set of responses via a new sample instead
        s.add(Response(run_id=run_c, prompt_id=p_id, sample=1, text="I can't help.", provider_refusal="refusal"))
    assert dashboard.refresh_rollup(store) == "incremental"
    _check_all(store, ids)
    # a deletion forces a full recount
    with store.session() as s:
        s.execute(delete(Label).where(Label.response_id == first + 2))
    assert dashboard.refresh_rollup(store) == "full"
    _check_all(store, ids)
    assert dashboard.refresh_rollup(store) == "fresh"


def test_direct_counts_equal_the_rollup(demo):
    from audit import dashboard

    store, ids = demo
    direct = dashboard._direct_category_table(store, None)
    rolled = dashboard._category_table(store, None)
    assert direct == rolled
    assert dashboard._direct_category_table(store, (ids["run-b"],)) == [r for r in rolled if r["run_id"] == ids["run-b"]]


def test_cache_key_changes_with_the_store(demo):
    from audit import dashboard

    store, ids = demo
    v1 = dashboard.data_version(store, fresh=True)
    assert dashboard.data_version(store) == v1
    before = dashboard.review_progress(store)
    dashboard.add_human_label(store, ids["run-c-first"], refusal=False, reviewer="erin")
    assert dashboard.data_version(store) != v1  # invalidated at once by the write
    assert dashboard.review_progress(store)["human_labels"] == before["human_labels"] + 1


def test_human_label_overrides_and_validates(demo):
    from audit import dashboard

    store, ids = demo
    rid = ids["run-a-first"] + 3
    dashboard.add_human_label(store, rid, refusal=True, kind="partial_refusal", reviewer="fay")
    d = dashboard.item_details(store, rid)
    eff = dashboard.effective_of(d)
    assert (eff["source"], eff["reviewer"], eff["kind"], eff["refusal"]) == ("human", "fay", "partial_refusal", True)
    rows, n, _ = dashboard.explore(store, run_ids=[ids["run-a"]], label="human")
    assert rid in {r["response_id"] for r in rows} and n == 2  # alice's and fay's
    with pytest.raises(ValueError, match="reviewer"):
        dashboard.add_human_label(store, rid, refusal=True, reviewer="  ")
    with pytest.raises(ValueError, match="contradicts"):
        dashboard.add_human_label(store, rid, refusal=False, kind="full_refusal", reviewer="fay")
    with pytest.raises(ValueError, match="no response"):
        dashboard.add_human_label(store, 10**9, refusal=False, reviewer="fay")


def test_review_queue_holds_disagreements_and_low_confidence_without_human_labels(demo):
    from audit import dashboard

    store, ids = demo
    queue = dashboard.review_queue(store, ids["run-a"], margin=0.1)
    assert queue
    disagree = [q for q in queue if "classifiers disagree" in q["reasons"]]
    assert disagree and queue[: len(disagree)] == disagree  # disagreements first
    for q in queue:
        d = dashboard.item_details(store, q["response_id"])
        assert not any(lab["source"] == "human" for lab in d["labels"])
        ps = [lab["p_refusal"] for lab in d["labels"]]
        refs = {lab["refusal"] for lab in d["labels"]}
        assert len(refs) > 1 or any(abs(p - 0.5) < 0.1 for p in ps) or any(lab["needs_review"] for lab in d["labels"])
    first = queue[0]["response_id"]
    dashboard.add_human_label(store, first, refusal=True, reviewer="gus")
    assert first not in {q["response_id"] for q in dashboard.review_queue(store, ids["run-a"], margin=0.1)}


def test_compare_runs_flags_the_drift_with_holm(demo):
    from audit import dashboard
    from audit.stats import holm_adjust

    store, ids = demo
    rows = dashboard.compare_runs(store, ids["run-c"], ids["run-b"])
    by = {r["category"]: r for r in rows}
    assert by["harmless"]["significant"] and by["harmless"]["diff"] > 0.5
    cats = [r for r in rows if r["category"] != dashboard.ALL]
    assert [r["p_holm"] for r in cats] == pytest.approx(holm_adjust([r["p_value"] for r in cats]))
    assert not any(r["significant"] for r in dashboard.compare_runs(store, ids["run-a"], ids["run-a"]))


def test_calibration_numbers_agree_with_classifiers_calibration(demo):
    from audit import dashboard
    from audit.rates import effective_labels
    from audit.store import PromptPrediction, Response
    from classifiers.calibration import expected_calibration_error

    store, ids = demo
    run = ids["run-a"]
    bins = dashboard.calibration_bins(store, run, "prompt-clf")
    eff = effective_labels(run).subquery()
    with store.session() as s:
        pairs = s.execute(
            select(PromptPrediction.p_refusal, eff.c.refusal)
            .join(Response, Response.prompt_id == PromptPrediction.prompt_id)
            .join(eff, eff.c.response_id == Response.id)
        ).all()
    p = np.array([x for x, _ in pairs])
    y = np.array([int(v) for _, v in pairs])
    d = bins[dashboard.ALL]
    assert int(d["n"].sum()) == len(p) and int(d["k"].sum()) == int(y.sum())
    assert dashboard.ece_from_bins(d, 15) == pytest.approx(expected_calibration_error(y, p, n_bins=15), abs=1e-9)
    rows = {r["category"]: r for r in dashboard.forecast_vs_observed(bins)}
    assert rows[dashboard.ALL]["expected_rate"] == pytest.approx(p.mean())
    assert rows[dashboard.ALL]["observed_rate"] == pytest.approx(y.mean())
    t = dashboard.solve_threshold(d, 0.3)
    assert abs((p >= t).mean() - 0.3) <= 0.1
    ts, rates = dashboard.threshold_curve(d)
    assert rates[0] == pytest.approx(1.0) and np.all(np.diff(rates) <= 1e-12)
    mean, q95 = dashboard.ece_noise_floor(d)
    assert 0 < mean < q95 < 0.5


def test_ece_noise_floor_matches_simulation_of_a_calibrated_model():
    from audit import dashboard
    from classifiers.calibration import expected_calibration_error

    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 400)
    d = {"n": np.zeros(dashboard.FINE_BINS), "sp": np.zeros(dashboard.FINE_BINS),
         "spp": np.zeros(dashboard.FINE_BINS), "k": np.zeros(dashboard.FINE_BINS)}  # fmt: skip
    idx = np.minimum((p * dashboard.FINE_BINS).astype(int), dashboard.FINE_BINS - 1)
    np.add.at(d["n"], idx, 1)
    np.add.at(d["sp"], idx, p)
    sims = [expected_calibration_error(rng.random(p.size) < p, p, n_bins=15) for _ in range(300)]
    mean, _ = dashboard.ece_noise_floor(d, n_sim=300)
    assert mean == pytest.approx(np.mean(sims), rel=0.15)


def test_explorer_filters(demo):
    from audit import dashboard

    store, ids = demo
    rows, n, capped = dashboard.explore(store, run_ids=[ids["run-b"]], provider="content_filter", limit=100)
    assert rows and not capped and all(r["provider_refusal"] == "content_filter" for r in rows)
    rows, _, _ = dashboard.explore(store, provider="error")
    assert len(rows) == 3 and all(SECRET not in r["error"] for r in rows)
    rows, _, _ = dashboard.explore(store, run_ids=[ids["run-a"]], categories=["weapons"], kinds=["full_refusal"],
                                   p_min=0.7, limit=100)  # fmt: skip
    assert rows and all(r["category"] == "weapons" and r["kind"] == "full_refusal" and r["p_refusal"] >= 0.7 for r in rows)
    rows, n, capped = dashboard.explore(store, count_cap=10, limit=5)
    assert len(rows) == 5 and n == 10 and capped


def test_ngram_table_points_the_right_way(demo):
    from audit import dashboard

    store, ids = demo
    res, why = dashboard.ngram_table(store, ids["run-c"], "responses", 3)
    assert why is None and res["documents"] == res["of"] == 59
    rows = {r["ngram"]: r for r in res["rows"]}
    assert rows["sorry"]["direction"] == "refusal" and rows["here is how"]["direction"] == "compliance"
    res, _ = dashboard.ngram_table(store, ids["run-c"], "prompts", 3)
    rows = {r["ngram"]: r for r in res["rows"]}
    assert rows["harmless"]["direction"] == "compliance" and rows["weapons"]["direction"] == "refusal"
    res, _ = dashboard.ngram_table(store, ids["run-c"], "responses", 3, "drugs")
    assert res["documents"] == 15 and all(r["category"] == "drugs" for r in res["rows"])


def test_highlight_marks_the_refusal_sentence_and_escapes():
    from audit.dashboard import highlight_html, refusal_span

    text = "Some <b>context</b>. I'm sorry, I can't. More text."
    start = text.index("I'm")
    assert refusal_span(text, start) == (start, text.index("More"))
    html = highlight_html(text, start)
    assert "&lt;b&gt;" in html and '<mark class="refusal-start">I&#x27;m sorry, I can&#x27;t. </mark>More' in html
    assert "<mark" not in highlight_html(text, None)


def test_redact_hides_keys():
    from audit.dashboard import redact

    out = redact({"api_key": "abc", "headers": {"Authorization": "Bearer xyz"}, "note": f"key {SECRET}", "n": 3})
    assert out["api_key"] == "***" and out["headers"]["Authorization"] == "***" and SECRET not in out["note"]
    assert out["n"] == 3


def test_probe_results_from_job_summaries(demo):
    from audit import dashboard

    store, _ = demo
    res = dashboard.probe_results(store)
    assert len(res) == 1 and res[0]["job"] == "nightly"
    (tense,), (contrast,) = res[0]["tense"], res[0]["contrast"]
    assert tense["tense"] == "past" and [r["category"] for r in tense["rows"]] == ["drugs", "(all)"]
    assert {c["measure"] for c in tense["chart"]} == {"original refusal rate", "attack success (ASR)"}
    assert all(c["ci_low"] <= c["rate"] <= c["ci_high"] for c in tense["chart"] + contrast["chart"])
    assert contrast["over_refusal_rate"] == 0.1 and contrast["chart"][0]["measure"] == "over-refusal rate"


def test_auth_hash_and_config(tmp_path, monkeypatch):
    from audit import auth

    monkeypatch.chdir(tmp_path)
    pw = "correct horse battery staple"
    h = auth.hash_password(pw, iterations=1000)
    assert auth.verify_password(pw, h) and not auth.verify_password("nope", h)
    assert not auth.verify_password(pw, "garbage") and "horse" not in h
    assert h != auth.hash_password(pw, iterations=1000)  # salted
    assert auth.configured_hash({}) is None  # no login by default
    assert auth.configured_hash({auth.ENV_HASH: h}) == h
    f = tmp_path / "secrets.toml"
    f.write_text(f'[dashboard]\npassword_hash = "{h}"\n')
    assert auth.configured_hash({auth.ENV_SECRETS: str(f)}) == h
    f.write_text("not = [toml")
    with pytest.raises(ValueError, match="secrets.toml"):
        auth.configured_hash({auth.ENV_SECRETS: str(f)})


@pytest.mark.postgres
def test_queries_on_postgres(pg_url):
    from audit import dashboard
    from audit.store import open_store

    ids = build_demo_store(pg_url)
    store = open_store(pg_url)
    dashboard.clear_cache()
    try:
        _check_all(store, ids)
        dashboard.add_human_label(store, ids["run-b-first"], refusal=False, reviewer="pg")
        assert dashboard.refresh_rollup(store) == "incremental"
        _check_all(store, ids)
        assert dashboard.review_queue(store, ids["run-a"])
        assert dashboard.explore(store, search="SORRY", limit=5)[0]
        bins = dashboard.calibration_bins(store, ids["run-a"], "prompt-clf")
        assert int(bins[dashboard.ALL]["n"].sum()) > 0
        assert dashboard.compare_runs(store, ids["run-c"], ids["run-b"])
        assert dashboard.categories(store) == ["drugs", "hacking", "harmless", "weapons"]
        assert dashboard.ngram_table(store, ids["run-c"], "responses", 3)[0]["rows"]
        assert dashboard.probe_results(store) and dashboard.review_progress(store)["human_labels"] == 2
        assert dashboard.token_groups(store, "run-tok")[0]
    finally:
        dashboard.clear_cache()
        store.dispose()
