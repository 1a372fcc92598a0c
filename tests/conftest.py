"""Shared test setup. Test helpers (builders, scenarios, sdk_helpers) are importable through
pyproject's ``[tool.pytest.ini_options] pythonpath``, not sys.path edits."""
