"""Code shared by test modules (a module named test_* is never imported by
another). REPO is the checkout's root: tests that read the repository's own
files (README, docs, sources, shipped data) take their paths from it rather
than counting parents of their own path, which changes when a test moves.
Not in conftest.py: pytest loads conftest files itself, they are not for
importing."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
