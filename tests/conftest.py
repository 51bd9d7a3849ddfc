"""Test-wide settings live in tests/pytest.ini (pythonpath, one marker per tier)."""
