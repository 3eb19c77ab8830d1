"""The ``syncflow`` command line (the top layer: it may import every other one)."""

from syncflow.cli.app import app, main

__all__ = ["app", "main"]
