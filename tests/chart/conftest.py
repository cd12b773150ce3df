"""Fixtures of the Helm chart tests (helpers live in chartlib.py)."""

from chartlib import helm, helm_bin

__all__ = ["helm", "helm_bin"]
