"""Collector commands: target add/list, collect, worker, export run."""

from __future__ import annotations
