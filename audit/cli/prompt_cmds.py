"""Prompt classifier commands: train prompt, classify prompts, forecast, report ngrams."""

from __future__ import annotations
