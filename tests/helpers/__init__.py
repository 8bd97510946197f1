"""Helpers shared by the test modules (toy trainings, hostile-input strategies, tiny models)."""
