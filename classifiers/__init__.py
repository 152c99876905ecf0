"""Refusal classifiers: of responses (did the model refuse?) and of prompts (will it refuse?).

Names are imported lazily so that ``import classifiers`` stays cheap (no torch, no scikit-learn).
This package never imports ``audit``.
"""

from __future__ import annotations

import importlib

__all__ = [
    "BaselineResponseClassifier",
    "PromptClassifier",
    "ResponseClassifier",
    "load_default_response_classifier",
    "load_response_classifier",
]

_LAZY = {
    "ResponseClassifier": "classifiers.response",
    "BaselineResponseClassifier": "classifiers.response",
    "load_default_response_classifier": "classifiers.response",
    "load_response_classifier": "classifiers.response",
    "PromptClassifier": "classifiers.prompt",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'classifiers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
