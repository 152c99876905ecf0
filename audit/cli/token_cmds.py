"""Refusal-token audit commands: tokens compare/thresholds, serve-target refusal-token-sim."""

from __future__ import annotations
