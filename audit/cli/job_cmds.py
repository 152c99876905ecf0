"""Batch audit job commands: run."""

from __future__ import annotations
