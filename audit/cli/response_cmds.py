"""Response classifier commands: classify responses, label, eval responses, train response, review."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from audit.cli import app, classify_app, eval_app, train_app
from audit.cli.common import fail, get_store

review_app = typer.Typer(
    help="Review queue: list low-confidence and disputed labels, label them by hand.",
    invoke_without_command=True,
)
app.add_typer(review_app, name="review")

_PARTIAL = typer.Option(
    True,
    "--partial-is-refusal/--no-partial-is-refusal",
    help="Count partial refusals (redirected, disclaimed, contradicted) as refusals.",
)
_CASCADE = typer.Option(
    False,
    "--cascade/--full",
    help="--full (default): the fine-tuned encoder scores every response (most accurate, ~30/s on 2 cores); "
    "--cascade: only where the cheap head is unsure (~4x faster, ~0.5 pt less accurate).",
)


@classify_app.command("responses")
def classify_responses(
    in_path: Path = typer.Option(..., "--in", help="JSONL with prompt, response and optional id per line."),
    out_path: Path = typer.Option(..., "--out", help="Output JSONL: input fields + refusal, p_refusal, kind, refusal_start."),
    model: Path = typer.Option(None, "--model", help="A saved response classifier (default: the shipped one)."),
    partial_is_refusal: bool = _PARTIAL,
    cascade: bool = _CASCADE,
) -> None:
    """Classify responses file to file."""
    from audit.labeling import classify_jsonl
    from audit.prompts import InputError

    try:
        n = classify_jsonl(in_path, out_path, model, partial_is_refusal, use_cascade=cascade)
    except (InputError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"classified {n} responses -> {out_path}")


@app.command("label")
def label(
    run: str = typer.Option(..., "--run", help="Name of the run whose responses to label."),
    model: Path = typer.Option(None, "--model", help="A saved response classifier (default: the shipped one)."),
    partial_is_refusal: bool = _PARTIAL,
    cascade: bool = _CASCADE,
) -> None:
    """Label the unlabelled responses of a run with the response classifier."""
    from audit.labeling import label_run, load_classifier

    store = get_store()
    try:
        clf = load_classifier(model, partial_is_refusal)
        n = label_run(store, run, clf, progress=True, use_cascade=cascade)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"labelled {n} responses of run {run!r}")


def _print_metrics(title: str, m: dict) -> None:
    ece = f"{m['ece']:.4f}" if "ece" in m else "-"
    typer.echo(
        f"{title}: n={m['n']} accuracy={m['accuracy']:.4f} F1(refusal)={m['f1_refusal']:.4f} "
        f"F1(compliance)={m['f1_compliance']:.4f} ECE={ece}"
    )
    (tn, fp), (fn, tp) = m["confusion"]
    typer.echo("  confusion (rows true, cols predicted):  compliance  refusal")
    typer.echo(f"    compliance {tn:>26} {fp:>8}")
    typer.echo(f"    refusal    {fn:>26} {tp:>8}")


@eval_app.command("responses")
def eval_responses(
    in_path: Path = typer.Option(..., "--in", help="Labelled JSONL: prompt, response, refusal (or kind)."),
    by: str = typer.Option(None, "--by", help="Also report per value of this field."),
    model: Path = typer.Option(None, "--model", help="A saved response classifier (default: the shipped one)."),
    partial_is_refusal: bool = _PARTIAL,
    cascade: bool = _CASCADE,
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Accuracy, F1 per class, ECE and confusion matrix of the classifier on a labelled file."""
    from audit.labeling import evaluate_jsonl
    from audit.prompts import InputError

    try:
        res = evaluate_jsonl(in_path, by, model, partial_is_refusal, use_cascade=cascade)
    except (InputError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(res, indent=1))
        return
    typer.echo(f"model: {res['model']['name']} {res['model']['version']}")
    _print_metrics("overall", res["overall"])
    if "kind_accuracy" in res["overall"]:
        typer.echo(f"  kind accuracy: {res['overall']['kind_accuracy']:.4f}")
    for g, m in (res.get("groups") or {}).items():
        _print_metrics(f"{by}={g}", m)


@train_app.command("response")
def train_response_cmd(
    out: Path = typer.Option(..., "--out", help="Directory to write the model and its model card to."),
    include_human: bool = typer.Option(False, "--include-human", help="Add the store's human review labels."),
    no_embeddings: bool = typer.Option(False, "--no-embeddings", help="TF-IDF + labelling functions only (fast)."),
    encoder: str = typer.Option(
        "finetuned", "--encoder", help="Second stage: 'finetuned' (MiniLM fine-tuned, ~30 min on 2 cores) or 'frozen' (MiniLM embeddings)."
    ),
    full_card: bool = typer.Option(False, "--full-card", help="Also measure leave-one-source/model-out for the card (slow; frozen encoder)."),
    paper_split: bool = typer.Option(
        False, "--paper-split", help="Train without the paper's validation and test rows and score the 256 test rows (fine-tuned encoder)."
    ),
    encoder_from: Path | None = typer.Option(
        None,
        "--encoder-from",
        help="Reuse the fine-tuned encoder of this saved model: refit the heads and the fusion only (minutes, not half an hour).",
    ),
    styles: bool = typer.Option(
        True, "--styles/--no-styles", help="Train on the other-model-style sets too (data/other-model-styles; the default model does)."
    ),
) -> None:
    """Train the response classifier on the shipped data (and human labels) and save it."""
    from audit.labeling import train_response

    store = get_store() if include_human else None
    try:
        card = train_response(
            out,
            include_human=include_human,
            store=store,
            use_embeddings=not no_embeddings,
            encoder=encoder,
            full_card=full_card,
            paper_split_only=paper_split,
            encoder_from=encoder_from,
            include_styles=styles,
        )
    except ValueError as e:
        fail(str(e))
    rows = sum(d.get("rows", 0) for d in card.get("training_data", []) if isinstance(d, dict))
    typer.echo(f"trained {card['name']} {card['version']} on {rows} rows -> {out}")
    cv = (card.get("metrics") or {}).get("cross_validated_by_source") or []
    for r in cv:
        typer.echo(f"  {r['source']}: n={r['n']} accuracy={r['accuracy']:.4f} ece={r.get('ece', float('nan')):.4f}")


# --- review ---------------------------------------------------------------------------------------


def _show(item, width: int = 600) -> None:
    text = item.response
    start = item.refusal_start
    typer.echo(
        f"[{item.response_id}] run={item.run} p_refusal={item.p_refusal:.2f} kind={item.kind} "
        f"why={'; '.join(item.reasons) or '-'}"
    )
    typer.echo(f"  prompt:   {item.prompt[:300]!s}")
    if start is not None and 0 <= start < len(text):
        typer.echo(f"  response: {text[:start][:width]}" + typer.style(text[start : start + width], bold=True))
    else:
        typer.echo(f"  response: {text[:width]}")


@review_app.callback()
def review(
    ctx: typer.Context,
    run: str = typer.Option(None, "--run", help="Only this run."),
    reviewer: str = typer.Option(None, "--reviewer", help="Your name (default: $USER)."),
    limit: int = typer.Option(20, "--limit", help="Items per session."),
    margin: float = typer.Option(
        None, "--margin", help="Also queue items whose newest machine label has |p_refusal - 0.5| < MARGIN."
    ),
) -> None:
    """Without a subcommand: review the queue interactively (r = refusal, p = partial, c = compliance,
    s = skip, q = quit). The queue (the dashboard's too): responses without a human label that are
    flagged for review or on which classifiers disagree, and with --margin low-confidence ones."""
    if ctx.invoked_subcommand is not None:
        return
    from audit.review import add_human_label, default_reviewer, review_queue

    try:
        name = default_reviewer(reviewer)
    except ValueError as e:
        fail(str(e))
    store = get_store()
    try:
        items = review_queue(store, run, margin=margin, limit=limit)
    except ValueError as e:
        fail(str(e))
    if not items:
        typer.echo("review queue is empty")
        return
    done = 0
    for item in items:
        _show(item)
        choice = typer.prompt("label [r]efusal/[p]artial/[c]ompliance/[s]kip/[q]uit", default="s").strip().lower()
        if choice.startswith("q"):
            break
        kind = {"r": "full_refusal", "p": "partial_refusal", "c": "full_compliance"}.get(choice[:1])
        if kind is None:
            continue
        add_human_label(store, item.response_id, kind != "full_compliance", name, kind, item.refusal_start)
        done += 1
    typer.echo(f"{done} labels stored as {name}")


@review_app.command("list")
def review_list(
    run: str = typer.Option(None, "--run", help="Only this run."),
    limit: int = typer.Option(50, "--limit", help="At most this many items."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    margin: float = typer.Option(
        None, "--margin", help="Also list items whose newest machine label has |p_refusal - 0.5| < MARGIN."
    ),
) -> None:
    """List the review queue (the dashboard's too): responses without a human label that are flagged
    for review or on which classifiers disagree, and with --margin low-confidence ones; disagreements
    first, then the least confident."""
    from audit.review import review_queue

    try:
        items = review_queue(get_store(), run, margin=margin, limit=limit)
    except ValueError as e:
        fail(str(e))
    if as_json:
        for it in items:
            typer.echo(json.dumps(it.as_dict(), ensure_ascii=False))
        return
    if not items:
        typer.echo("review queue is empty")
    for it in items:
        _show(it, width=200)


@review_app.command("label")
def review_label(
    response_id: int = typer.Argument(..., help="The response id shown by `review list`."),
    verdict: str = typer.Argument(..., help="refusal | compliance"),
    kind: str = typer.Option(None, "--kind", help="full_refusal | partial_refusal | full_compliance"),
    reviewer: str = typer.Option(None, "--reviewer", help="Your name (default: $USER)."),
) -> None:
    """Store a human label for one response (overrides machine labels in every rate)."""
    from audit.review import add_human_label

    v = verdict.strip().lower()
    if v not in ("refusal", "compliance"):
        fail(f"verdict must be 'refusal' or 'compliance', not {verdict!r}")
    try:
        label_id = add_human_label(get_store(), response_id, v == "refusal", reviewer, kind)
    except ValueError as e:
        fail(str(e))
    typer.echo(f"stored human label {label_id} for response {response_id}: {v}")
