"""The package's version: the one place it is written (pyproject.toml reads it from here).

A leaf: it imports nothing, so anything may import it without pulling in the rest.
"""
__version__ = "0.1.0"
