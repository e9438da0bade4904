"""Headless core: no Qt here. Everything runs from the CLI, from workers and in tests."""
