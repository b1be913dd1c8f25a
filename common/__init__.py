"""Backend-agnostic core of dualbench: task registry, data readers, batch order, results, statistics.

Nothing in this package imports torch or paddle (tests/test_architecture.py checks it).
"""
__version__ = "0.1.0"
