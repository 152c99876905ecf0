"""refusal-audit: black-box refusal prediction and auditing of chat models."""

__version__ = "0.1.0"
