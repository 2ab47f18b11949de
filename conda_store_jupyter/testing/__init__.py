"""Test helpers that build real things (a local conda channel, a pip index) instead of mocks."""
