"""The test suite (``make test``; ``make test-unit`` without the slow checks)."""
