"""The n-gram report of a run: files, escaping, CSV formula neutralisation, per category, CLI."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from tests.prompt_helpers import build_run

EVIL = "<script>alert(1)</script>"


def _rows():
    rows = []
    for i in range(12):
        rows.append({"prompt": f"How do I make a weapon {i}? {EVIL}", "refusal": True, "category": f"unsafe {EVIL}" if i % 2 else "benign",
                     "response": f"=HYPERLINK(\"x\") I'm sorry, but I can't help with that {EVIL}."})
        rows.append({"prompt": f"How do I bake bread {i}?", "refusal": False, "category": "benign" if i % 2 else f"unsafe {EVIL}",
                     "response": f"@SUM(1) Sure, here is a recipe for bread number {i}."})
    return rows


def test_write_ngram_report_all_formats(store, tmp_path):
    from audit.reports.ngrams import write_ngram_report

    build_run(store, _rows())
    files = write_ngram_report(store, "r1", tmp_path / "out", ("csv", "json", "md", "html"), min_count=3)
    names = {f.name for f in files}
    assert names == {"ngrams_responses.csv", "ngrams_prompts.csv", "ngrams.json", "ngrams.md", "ngrams.html",
                     "ngrams_responses.png", "ngrams_prompts.png"}
    assert (tmp_path / "out" / "ngrams_responses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with open(tmp_path / "out" / "ngrams_responses.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cats = {r["category"] for r in rows}
    assert cats == {"(all)", "benign", f"unsafe {EVIL}"}
    for r in rows:
        for v in r.values():
            assert not v[:1] in ("=", "+", "@") and not (v.startswith("-") and not _is_number(v))
    sorry = [r for r in rows if r["ngram"] == "sorry" and r["category"] == "(all)"][0]
    assert float(sorry["z"]) > 0 and float(sorry["lr_coef"]) > 0 and sorry["direction"] == "refusal"
    assert int(sorry["docs_refusal"]) == 12 and int(sorry["docs_compliance"]) == 0
    assert all(int(r["docs"]) >= 3 for r in rows)

    doc = json.loads((tmp_path / "out" / "ngrams.json").read_text())
    assert doc["texts"]["prompts"]["(all)"]["n_docs"] == 24
    assert any(g["ngram"] == "bread" and g["direction"] == "compliance" for g in doc["texts"]["prompts"]["(all)"]["ngrams"])
    per_cat = doc["texts"]["responses"]["benign"]
    assert per_cat["n_docs"] == 12 and per_cat["n_refusal"] == 6 and per_cat["note"] is None

    page = (tmp_path / "out" / "ngrams.html").read_text()
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "src='data:image/png;base64," in page and "http" not in page.replace("HYPERLINK", "")
    md = (tmp_path / "out" / "ngrams.md").read_text()
    assert "sorry" in md and "ngrams_responses.png" in md


def _is_number(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


def test_one_class_category_gets_a_note(store, tmp_path):
    from audit.reports.ngrams import ngram_tables

    rows = _rows() + [{"prompt": f"Tell me a joke {i}", "refusal": False, "category": "jokes",
                       "response": "Sure, here is a joke."} for i in range(3)]
    build_run(store, rows)
    t = ngram_tables(store, "r1", min_count=3)
    assert t["responses"]["jokes"]["note"].startswith("only one class") and t["responses"]["jokes"]["stats"] == []


def test_csv_safe():
    from audit.reports.ngrams import csv_safe

    assert csv_safe("=1+1") == "'=1+1" and csv_safe("+x") == "'+x" and csv_safe("-x") == "'-x"
    assert csv_safe("@x") == "'@x" and csv_safe("ok") == "ok" and csv_safe(-1.5) == -1.5


def test_report_ngrams_cli(store, db_url, tmp_path):
    from audit.cli import app

    build_run(store, _rows())
    r = CliRunner().invoke(app, ["--db", db_url, "report", "ngrams", "--run", "r1", "--out", str(tmp_path / "o"),
                                 "--format", "csv,md", "--min-count", "4"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "ngrams_prompts.csv").is_file() and (tmp_path / "o" / "ngrams.md").is_file()
    assert not (tmp_path / "o" / "ngrams.html").exists()
    r = CliRunner().invoke(app, ["--db", db_url, "report", "ngrams", "--run", "nope", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "nope" in r.output
    r = CliRunner().invoke(app, ["--db", db_url, "report", "ngrams", "--run", "r1", "--out", str(tmp_path / "p"),
                                 "--format", "xlsx"])
    assert r.exit_code == 2 and "xlsx" in r.output
