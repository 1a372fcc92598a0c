"""Shared test setup: make the test helpers importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
