"""Machine labels for the responses of a run: the response classifier, applied in batches.

``label_run`` writes one machine :class:`~audit.store.Label` per response of the run that has text and
no label yet from the same classifier (name and version), so re-running it is a no-op and a new
classifier version labels everything again. Items the classifier is unsure of, or on which the
labelling functions disagree, are stored with ``needs_review`` and a ``review_reason``: they form
the review queue (:mod:`audit.review`).
"""

from __future__ import annotations

from sqlalchemy import and_, exists, select

from audit.store import Label, Prompt, Response, Run, Store

BATCH = 256


def classifier_identity(classifier) -> tuple[str, str]:
    """``(name, version)`` under which a classifier's labels are stored."""
    name = getattr(classifier, "name", type(classifier).__name__)
    version = str(getattr(classifier, "version", None) or getattr(classifier, "version_", None) or "0")
    return name, version


def label_run(
    store: Store,
    run_name: str,
    classifier=None,
    *,
    batch_size: int = BATCH,
    progress: bool = False,
    use_cascade: bool = False,
) -> int:
    """Label every unlabelled response of ``run_name``; returns the number of labels written.

    ``classifier`` defaults to the shipped default response classifier. Responses without text (an
    error, an empty completion) are skipped: they have no label and do not count in rates.
    ``use_cascade=False`` (as in ``classify responses``) scores every response with the full model;
    ``True`` sends only the responses the cheap head is unsure of to the encoder.
    """
    if classifier is None:
        from classifiers import load_default_response_classifier

        classifier = load_default_response_classifier()
    name, version = classifier_identity(classifier)
    with store.session() as s:
        run = s.scalar(select(Run).where(Run.name == run_name))
        if run is None:
            raise ValueError(f"no run named {run_name!r}")
        already = exists().where(
            and_(Label.response_id == Response.id, Label.classifier == name, Label.classifier_version == version)
        )
        rows = s.execute(
            select(Response.id, Prompt.text, Response.text)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .where(Response.run_id == run.id, Response.text.is_not(None), ~already)
            .order_by(Response.id)
        ).all()
    rows = [r for r in rows if r[2] is not None]
    if not rows:
        return 0
    written = 0
    prog = None
    task = None
    if progress:
        from rich.progress import Progress

        prog = Progress(transient=True)
        prog.start()
        task = prog.add_task(f"labelling {run_name}", total=len(rows))
    try:
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            details = classifier.predict_details([r[1] for r in chunk], [r[2] for r in chunk], use_cascade=use_cascade)
            with store.session() as s:
                for (rid, _, _), d in zip(chunk, details):
                    s.add(
                        Label(
                            response_id=rid,
                            classifier=name,
                            classifier_version=version,
                            source="machine",
                            refusal=bool(d["refusal"]),
                            kind=d["kind"],
                            p_refusal=float(d["p_refusal"]),
                            refusal_start=d.get("refusal_start"),
                            needs_review=bool(d.get("needs_review", False)),
                            review_reason=d.get("review_reason"),
                        )
                    )
            written += len(chunk)
            if prog is not None:
                prog.update(task, advance=len(chunk))
    finally:
        if prog is not None:
            prog.stop()
    return written


# --------------------------------------------------------------------------------------------------
# file to file: classify, evaluate


def load_classifier(model_dir=None, partial_is_refusal: bool | None = None):
    """The saved classifier in ``model_dir`` (the shipped default when ``None``), with the binary mapping set."""
    from classifiers.response import load_response_classifier

    clf = load_response_classifier(model_dir)
    if partial_is_refusal is not None:
        clf.partial_is_refusal = bool(partial_is_refusal)
    return clf


def read_response_jsonl(path, *, require_label: bool = False) -> list[dict]:
    """Read a JSONL file of ``{prompt, response, [id], [refusal], ...}`` objects.

    Raises :class:`audit.prompts.InputError` naming the file, line and field of the first bad record.
    With ``require_label``, every line needs ``refusal`` (bool, 0/1 or refusal/compliance) or ``kind``.
    """
    from pathlib import Path

    from audit.prompts import InputError, parse_label, read_jsonl_objects

    p = Path(path)
    rows = []
    for n, obj in read_jsonl_objects(p):
        for field in ("prompt", "response"):
            if field not in obj:
                raise InputError(p, n, field, "missing")
            if not isinstance(obj[field], str):
                raise InputError(p, n, field, f"must be a string, not {type(obj[field]).__name__}")
        if require_label:
            kind = obj.get("kind")
            if kind is not None and kind not in KINDS:
                raise InputError(p, n, "kind", f"must be one of {', '.join(KINDS)}")
            if "refusal" in obj:
                try:
                    lab = parse_label(obj["refusal"], p, n, "refusal")
                except InputError:
                    raise
                except ValueError as e:
                    raise InputError(p, n, "refusal", str(e)) from None
                if lab is None:
                    raise InputError(p, n, "refusal", "empty")
                obj["_label"] = lab
            elif kind is not None:
                obj["_label"] = kind != "full_compliance"
            else:
                raise InputError(p, n, "refusal", "missing (a label or a kind is required)")
        obj["_line"] = n
        rows.append(obj)
    return rows


KINDS = ("full_compliance", "partial_refusal", "full_refusal")


def classify_jsonl(
    in_path,
    out_path,
    model_dir=None,
    partial_is_refusal: bool = True,
    batch_size: int = 256,
    use_cascade: bool = False,
    progress: bool = True,
) -> int:
    """Classify every line of ``in_path`` into ``out_path`` (all input fields kept, plus ``refusal,
    p_refusal, kind, refusal_start``). The output is written atomically; returns the line count.
    ``use_cascade=False`` scores every response with the full model (the most accurate)."""
    import json
    import os
    from pathlib import Path

    from tqdm import tqdm

    rows = read_response_jsonl(in_path)
    clf = load_classifier(model_dir, partial_is_refusal)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        bar = tqdm(total=len(rows), desc="classify", unit="response", disable=not progress or len(rows) < batch_size)
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            details = clf.predict_details(
                [r["prompt"] for r in chunk], [r["response"] for r in chunk], use_cascade=use_cascade
            )
            bar.update(len(chunk))
            for r, d in zip(chunk, details):
                rec = {k: v for k, v in r.items() if not k.startswith("_")}
                rec.update(
                    refusal=d["refusal"], p_refusal=round(d["p_refusal"], 6), kind=d["kind"], refusal_start=d["refusal_start"]
                )
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        bar.close()
    os.replace(tmp, out)
    return len(rows)


def evaluate_jsonl(
    in_path, by: str | None = None, model_dir=None, partial_is_refusal: bool = True, use_cascade: bool = False
) -> dict:
    """Classify a labelled JSONL file and compare: accuracy, F1 per class, ECE, confusion matrix,
    overall and per value of the field ``by``."""
    from audit.prompts import InputError
    from classifiers.evaluation import evaluate

    rows = read_response_jsonl(in_path, require_label=True)
    if by is not None:
        for r in rows:
            if by not in r:
                raise InputError(in_path, r["_line"], by, "missing (needed by --by)")
    clf = load_classifier(model_dir, partial_is_refusal)
    details = clf.predict_details([r["prompt"] for r in rows], [r["response"] for r in rows], use_cascade=use_cascade)
    res = evaluate(
        [int(r["_label"]) for r in rows],
        [int(d["refusal"]) for d in details],
        [d["p_refusal"] for d in details],
        groups=[r[by] for r in rows] if by else None,
        true_kinds=[r.get("kind") for r in rows],
        pred_kinds=[d["kind"] for d in details],
    )
    res["model"] = {"name": clf.name, "version": clf.version, "dir": getattr(clf, "model_dir_", None)}
    return res


def train_response(
    out_dir,
    *,
    include_human: bool = False,
    store: Store | None = None,
    progress: bool = True,
    encoder: str = "frozen",
    use_embeddings: bool = True,
    paper_split_only: bool = False,
    encoder_from=None,
    include_styles: bool = True,
    **kw,
) -> dict:
    """Train the response classifier on the shipped data (plus the store's human labels with
    ``include_human``) and save it with its model card to ``out_dir``; returns the card.

    ``encoder="finetuned"`` (with ``use_embeddings``) trains the shipped architecture, MiniLM
    fine-tuned as the second stage; ``"frozen"`` uses MiniLM embeddings as features;
    ``use_embeddings=False`` trains the cheap head alone. ``encoder_from``: a saved model directory
    whose fine-tuned encoder is reused (no fine-tuning; the heads and the fusion are refitted)."""
    from classifiers.training import train_default, train_finetuned

    if encoder not in ("frozen", "finetuned"):
        raise ValueError(f"encoder must be 'frozen' or 'finetuned', got {encoder!r}")

    extra = []
    if include_human:
        if store is None:
            raise ValueError("include_human needs a store")
        from audit.review import human_training_rows

        extra = human_training_rows(store)
    if encoder == "finetuned" and use_embeddings:
        finetuned = None
        if encoder_from is not None:
            from classifiers.training import load_encoder

            finetuned = load_encoder(encoder_from)
        return train_finetuned(
            out_dir,
            extra_rows=extra,
            progress=progress,
            paper_split_only=paper_split_only,
            finetuned=finetuned,
            include_styles=include_styles,
        )
    if encoder_from is not None:
        raise ValueError("--encoder-from reuses a fine-tuned encoder: use it with --encoder finetuned")
    if paper_split_only:
        raise ValueError("--paper-split trains the fine-tuned encoder: use it with --encoder finetuned")
    return train_default(
        out_dir, extra_rows=extra, progress=progress, use_embeddings=use_embeddings, include_styles=include_styles, **kw
    )
