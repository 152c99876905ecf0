"""The store opens with migrations applied, and imports are validated and transactional."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, inspect, select, text
from typer.testing import CliRunner

from audit.cli import app
from audit.prompts import InputError, import_prompts
from audit.rates import category_rates
from audit.store import Label, Prompt, PromptSet, Response, Run, Target, open_store


def test_open_applies_migrations_and_sqlite_pragmas(store):
    tables = set(inspect(store.engine).get_table_names())
    assert {"prompts", "responses", "labels", "targets", "runs", "tasks", "alembic_version"} <= tables
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_reopen_is_idempotent(db_url):
    open_store(db_url).dispose()
    s = open_store(db_url)
    with s.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() >= 1
    s.dispose()


def test_import_jsonl_csv_json(store, tmp_path):
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"prompt": "hi", "category": "x"}\n\n{"prompt": "bye", "response": "no", "label": "refusal"}\n')
    csvf = tmp_path / "b.csv"
    csvf.write_text("prompt,category,label\nhello,y,0\n")
    js = tmp_path / "c.json"
    js.write_text(json.dumps([{"prompt": "one", "tone": "rejected"}, {"prompt": "hi"}]))
    assert import_prompts(store, jl, "s").added == 2
    assert import_prompts(store, csvf, "s").added == 1
    r = import_prompts(store, js, "s")
    assert (r.added, r.skipped) == (1, 1)
    with store.session() as s:
        rows = {p.text: p for p in s.scalars(select(Prompt))}
    assert rows["bye"].reference_label is True and rows["bye"].reference_response == "no"
    assert rows["hello"].reference_label is False and rows["hello"].category == "y"
    assert rows["one"].reference_label is True


@pytest.mark.parametrize(
    "name,content,line,field",
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": ""}\n', 2, "prompt"),
        ("bad2.jsonl", '{"prompt": "ok"}\n{"prompt": "x", "label": "maybe"}\n', 2, "label"),
        ("bad3.jsonl", '{"prompt": "ok"}\n{not json\n', 2, None),
        ("bad.csv", "prompt,category\nok,a\nfine,b\n,c\n", 4, "prompt"),
        ("bad.json", '[\n {"prompt": "a"},\n {"prompt": 3}\n]', 3, "prompt"),
        ("bad4.jsonl", '{"prompt": "a", "category": 5}\n', 1, "category"),
    ],
)
def test_bad_input_names_file_line_field_and_writes_nothing(store, tmp_path, name, content, line, field):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(InputError) as exc:
        import_prompts(store, f, "s")
    assert exc.value.line == line and exc.value.field == field
    assert name in str(exc.value)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Prompt)) == 0
        assert s.scalar(select(func.count()).select_from(PromptSet)) == 0


def test_cli_import_reports_error(tmp_path, db_url):
    f = tmp_path / "x.jsonl"
    f.write_text('{"prompt": "a"}\n{"category": "b"}\n')
    res = CliRunner().invoke(app, ["--db", db_url, "import", str(f), "--set", "s"])
    assert res.exit_code == 2
    assert "x.jsonl:2: prompt:" in res.output


def test_category_rates_human_overrides_machine(store):
    with store.session() as s:
        ps = PromptSet(name="s")
        t = Target(name="t", provider="openai", params={})
        s.add_all([ps, t])
        s.flush()
        run = Run(name="r", set_id=ps.id, target_id=t.id, config={})
        s.add(run)
        s.flush()
        prompts = [Prompt(set_id=ps.id, text=f"p{i}", category="a" if i < 4 else "b", content_hash=str(i)) for i in range(6)]
        s.add_all(prompts)
        s.flush()
        resp = [Response(run_id=run.id, prompt_id=p.id, sample=0, text="x") for p in prompts]
        resp.append(Response(run_id=run.id, prompt_id=prompts[0].id, sample=1, error="timeout"))
        s.add_all(resp)
        s.flush()
        for i, r in enumerate(resp[:6]):
            s.add(Label(response_id=r.id, classifier="c", classifier_version="1", refusal=i % 2 == 0, kind="full_refusal", p_refusal=0.9))
        # a human overrides response 1 (machine: compliance) -> refusal
        s.add(Label(response_id=resp[1].id, classifier="human", classifier_version="-", source="human", refusal=True, kind="full_refusal", p_refusal=1.0, reviewer="ann"))
        run_id = run.id
    with store.session() as s:
        rates = {r.category: r for r in category_rates(s, run_id)}
    assert rates["a"].n == 4 and rates["a"].refusals == 3 and rates["a"].errors == 1 and rates["a"].human_labels == 1
    assert rates["b"].n == 2 and rates["b"].refusals == 1
    assert rates["(all)"].n == 6 and rates["(all)"].refusals == 4
    assert rates["a"].ci_low < 0.75 < rates["a"].ci_high


def test_prompt_refusal_rates_over_samples(store):
    from audit.rates import prompt_refusal_rates

    with store.session() as s:
        ps = PromptSet(name="s")
        t = Target(name="t", provider="openai", params={})
        s.add_all([ps, t])
        s.flush()
        run = Run(name="r", set_id=ps.id, target_id=t.id, config={})
        p1 = Prompt(set_id=ps.id, text="a", category="c", content_hash="a")
        p2 = Prompt(set_id=ps.id, text="b", category="c", content_hash="b")
        s.add_all([run, p1, p2])
        s.flush()
        for prompt, verdicts in ((p1, [True, True, False, True]), (p2, [False, False])):
            for i, v in enumerate(verdicts):
                r = Response(run_id=run.id, prompt_id=prompt.id, sample=i, text="x")
                s.add(r)
                s.flush()
                s.add(Label(response_id=r.id, classifier="c", classifier_version="1", refusal=v, kind="full_refusal" if v else "full_compliance", p_refusal=0.5))
        run_id = run.id
    with store.session() as s:
        rates = prompt_refusal_rates(s, run_id)
    assert [(r.samples, r.refusals) for r in rates] == [(4, 3), (2, 0)]
    assert rates[0].p_refusal == 0.75
