"""The per-container sync worker (a program of its own: python -m workers)."""

__version__ = "0.1.0"
