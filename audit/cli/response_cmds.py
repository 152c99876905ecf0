"""Response classifier commands: classify responses, label, eval responses, train response, review."""

from __future__ import annotations
