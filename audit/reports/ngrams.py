"""N-gram report of a run: which phrases of the responses, and of the prompts, go with refusal.

For responses and for prompts, overall and per category, :func:`classifiers.ngrams.ngram_statistics`
gives the Monroe et al. (2008) log-odds ratio with an informative Dirichlet prior and its z-score, the
TF-IDF logistic-regression coefficient (as in the paper) and the counts in each class; n-grams in
fewer than ``min_count`` documents are dropped. Labels are the run's effective labels (human over
machine). A prompt counts as refused when at least half of its labelled samples were refusals.

Formats: ``csv`` (one file per text kind; cells that begin with ``= + - @`` are prefixed with ``'``
against formula injection), ``json``, ``md``, ``html`` (self-contained: inline CSS, charts embedded as
base64 PNG, every text escaped) and a bar-chart PNG of the top n-grams each way per text kind.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from audit.rates import ALL, effective_labels, run_by_name
from audit.store import Prompt, Response, Store

FORMATS = ("csv", "json", "md", "html")
KINDS = ("responses", "prompts")
NONE = "(none)"
CSV_FIELDS = ["text", "category", "ngram", "n", "direction", "z", "log_odds", "se", "lr_coef", "docs", "docs_refusal",
              "docs_compliance", "count_refusal", "count_compliance"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class NgramReportError(ValueError):
    pass


def csv_safe(value):
    """Neutralise a CSV cell that a spreadsheet would read as a formula (prefix ``'``)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _run_documents(store: Store, run_name: str) -> tuple[dict, dict]:
    """``(responses, prompts)``: each ``{"texts": [...], "labels": [...], "categories": [...]}``."""
    with store.session() as session:
        run = run_by_name(session, run_name)
        if run is None:
            raise NgramReportError(f"no run named {run_name!r}")
        eff = effective_labels(run.id).subquery()
        q = (
            select(Response.text, Prompt.id, Prompt.text, Prompt.category, eff.c.refusal)
            .select_from(Response)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .join(eff, eff.c.response_id == Response.id)
            .where(Response.run_id == run.id)
            .order_by(Response.id)
        )
        rows = session.execute(q).all()
    responses = {"texts": [], "labels": [], "categories": []}
    per_prompt: dict[int, list] = {}
    votes: dict[int, list[int]] = defaultdict(list)
    for rtext, pid, ptext, cat, refusal in rows:
        if rtext:
            responses["texts"].append(rtext)
            responses["labels"].append(bool(refusal))
            responses["categories"].append(cat or NONE)
        per_prompt.setdefault(pid, [ptext, cat or NONE])
        votes[pid].append(int(bool(refusal)))
    prompts = {"texts": [], "labels": [], "categories": []}
    for pid, (ptext, cat) in per_prompt.items():
        v = votes[pid]
        prompts["texts"].append(ptext)
        prompts["labels"].append(sum(v) * 2 >= len(v))
        prompts["categories"].append(cat)
    return responses, prompts


def ngram_tables(store: Store, run_name: str, *, min_count: int = 5, ngram_range=(1, 3)) -> dict:
    """``{kind: {category: {"n_docs", "n_refusal", "stats": [dict], "note"}}}`` for responses and prompts."""
    from classifiers.ngrams import ngram_statistics

    docs = dict(zip(KINDS, _run_documents(store, run_name)))
    out: dict = {}
    for kind, d in docs.items():
        out[kind] = {}
        groups: dict[str, list[int]] = {ALL: list(range(len(d["texts"])))}
        cats = sorted(set(d["categories"]))
        if len(cats) > 1 or (cats and cats[0] != NONE):
            for c in cats:
                groups[c] = [i for i, ci in enumerate(d["categories"]) if ci == c]
        for c, idx in groups.items():
            texts = [d["texts"][i] for i in idx]
            labels = [d["labels"][i] for i in idx]
            k = sum(labels)
            entry = {"n_docs": len(texts), "n_refusal": k, "stats": [], "note": None}
            if not texts:
                entry["note"] = "no labelled texts"
            elif k == 0 or k == len(texts):
                entry["note"] = "only one class (all refusals or all compliance): no contrast to measure"
            else:
                stats = ngram_statistics(texts, labels, ngram_range=ngram_range, min_count=min_count)
                entry["stats"] = [s.as_dict() for s in stats]
                if not stats:
                    entry["note"] = f"no n-gram occurs in {min_count} or more texts"
            out[kind][c] = entry
    return out


def _top(stats: list[dict], k: int) -> tuple[list[dict], list[dict]]:
    ref = [s for s in stats if s["z"] > 0][:k]
    com = sorted((s for s in stats if s["z"] < 0), key=lambda s: s["z"])[:k]
    return ref, com


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _md_cell(v) -> str:
    return _fmt(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "\\`")


def _write_csv(path: Path, tables: dict, kind: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for cat, entry in tables[kind].items():
            for s in entry["stats"]:
                row = {"text": kind, "category": cat, **s}
                w.writerow([csv_safe(_fmt(row[f]) if isinstance(row[f], float) else row[f]) for f in CSV_FIELDS])


def _write_png(path: Path, stats: list[dict], title: str, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, com = _top(stats, k)
    items = sorted(ref + com, key=lambda s: s["z"])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(items) + 1.2)))
    if items:
        ax.barh(range(len(items)), [s["z"] for s in items],
                color=["#c0392b" if s["z"] > 0 else "#2471a3" for s in items])
        ax.set_yticks(range(len(items)))
        ax.set_yticklabels([s["ngram"] for s in items], fontsize=8)
    else:
        ax.text(0.5, 0.5, "no n-grams", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("z-score of the log-odds ratio (refusal > 0 > compliance)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(tables: dict, run_name: str, k: int, min_count: int, pngs: dict) -> str:
    L = [f"# N-grams of refusal and compliance: run {_md_cell(run_name)}", "",
         f"Log-odds ratios with an informative Dirichlet prior (Monroe et al. 2008), their z-scores, "
         f"TF-IDF logistic-regression coefficients and counts; n-grams in at least {min_count} texts. "
         "Positive: refusal; negative: compliance.", ""]
    for kind in KINDS:
        L += [f"## {kind.capitalize()}", ""]
        if kind in pngs:
            L += [f"![top n-grams of the {kind}]({pngs[kind].name})", ""]
        for cat, e in tables[kind].items():
            L += [f"### {_md_cell(cat)} ({e['n_docs']} texts, {e['n_refusal']} refusals)", ""]
            if e["note"]:
                L += [f"_{_md_cell(e['note'])}_", ""]
                continue
            for label, items in zip(("refusal", "compliance"), _top(e["stats"], k)):
                L += [f"Most indicative of **{label}**:", "",
                      "| n-gram | z | log-odds | LR coef | docs refusal | docs compliance |", "|---|---|---|---|---|---|"]
                L += [f"| {_md_cell(s['ngram'])} | {s['z']:.2f} | {s['log_odds']:.3f} | {_md_cell(s['lr_coef'])} | "
                      f"{s['docs_refusal']} | {s['docs_compliance']} |" for s in items]
                L.append("")
    return "\n".join(L)


def _html(tables: dict, run_name: str, k: int, min_count: int, pngs: dict) -> str:
    e_ = html.escape
    H = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
         f"<title>N-grams: {e_(run_name)}</title>",
         "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
         "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.9em}th{background:#eee}"
         ".r{color:#c0392b}.c{color:#2471a3}.note{color:#666;font-style:italic}img{max-width:100%}</style>",
         "</head><body>", f"<h1>N-grams of refusal and compliance: run {e_(run_name)}</h1>",
         f"<p>Log-odds ratios with an informative Dirichlet prior (Monroe et al. 2008), z-scores, TF-IDF "
         f"logistic-regression coefficients and counts; n-grams in at least {int(min_count)} texts.</p>"]
    for kind in KINDS:
        H.append(f"<h2>{e_(kind.capitalize())}</h2>")
        if kind in pngs:
            data = base64.b64encode(pngs[kind].read_bytes()).decode("ascii")
            H.append(f"<img alt='top n-grams of the {e_(kind)}' src='data:image/png;base64,{data}'>")
        for cat, ent in tables[kind].items():
            H.append(f"<h3>{e_(cat)} ({ent['n_docs']} texts, {ent['n_refusal']} refusals)</h3>")
            if ent["note"]:
                H.append(f"<p class='note'>{e_(ent['note'])}</p>")
                continue
            for label, cls, items in zip(("refusal", "compliance"), ("r", "c"), _top(ent["stats"], k)):
                H.append(f"<p>Most indicative of <b class='{cls}'>{label}</b>:</p><table><tr><th>n-gram</th><th>z</th>"
                         "<th>log-odds</th><th>LR coef</th><th>docs refusal</th><th>docs compliance</th></tr>")
                for s in items:
                    H.append(f"<tr><td>{e_(s['ngram'])}</td><td>{s['z']:.2f}</td><td>{s['log_odds']:.3f}</td>"
                             f"<td>{e_(_fmt(s['lr_coef']))}</td><td>{s['docs_refusal']}</td><td>{s['docs_compliance']}</td></tr>")
                H.append("</table>")
    H.append("</body></html>")
    return "\n".join(H)


def write_ngram_report(
    store: Store,
    run_name: str,
    out_dir: str | Path,
    formats=("csv", "md"),
    *,
    min_count: int = 5,
    top: int = 20,
    png: bool = True,
) -> list[Path]:
    """Write the n-gram report of ``run_name`` into ``out_dir``; returns the files written."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise NgramReportError(f"unknown format(s) {', '.join(bad)}; use {', '.join(FORMATS)}")
    tables = ngram_tables(store, run_name, min_count=min_count)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    pngs: dict[str, Path] = {}
    if png or "html" in formats:
        for kind in KINDS:
            entry = tables[kind].get(ALL)
            if entry and entry["stats"]:
                p = out / f"ngrams_{kind}.png"
                _write_png(p, entry["stats"], f"Top n-grams of the {kind} (run {run_name})", min(top, 15))
                pngs[kind] = p
        if png:
            files += list(pngs.values())
    if "csv" in formats:
        for kind in KINDS:
            p = out / f"ngrams_{kind}.csv"
            _write_csv(p, tables, kind)
            files.append(p)
    if "json" in formats:
        p = out / "ngrams.json"
        doc = {"run": run_name, "min_count": min_count, "method": "log-odds ratio, informative Dirichlet prior "
               "(Monroe, Colaresi & Quinn 2008); TF-IDF + logistic regression (C=10, liblinear)",
               "texts": {kind: {cat: {"n_docs": e["n_docs"], "n_refusal": e["n_refusal"], "note": e["note"],
                                       "ngrams": [{**s, "category": cat, "text": kind} for s in e["stats"]]}
                                for cat, e in tables[kind].items()} for kind in KINDS}}

        def _clean(o):
            if isinstance(o, float) and math.isnan(o):
                return None
            if isinstance(o, dict):
                return {k: _clean(v) for k, v in o.items()}
            if isinstance(o, list):
                return [_clean(v) for v in o]
            return o

        p.write_text(json.dumps(_clean(doc), ensure_ascii=False, indent=1, allow_nan=False), encoding="utf-8")
        files.append(p)
    if "md" in formats:
        p = out / "ngrams.md"
        p.write_text(_markdown(tables, run_name, top, min_count, pngs), encoding="utf-8")
        files.append(p)
    if "html" in formats:
        p = out / "ngrams.html"
        p.write_text(_html(tables, run_name, top, min_count, pngs), encoding="utf-8")
        files.append(p)
    return files
