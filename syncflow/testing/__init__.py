"""Test doubles users can run too: the reference seq server (demo, tests, bench) and a fake Telegram client."""
