"""Test doubles users can run too: the reference seq server (demo, tests, bench)."""
