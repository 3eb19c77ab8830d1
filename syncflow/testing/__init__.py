"""Test doubles of syncflow's sources (no network, no services)."""
