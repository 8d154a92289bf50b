"""Test files mirror the package in folders without __init__.py, so pytest imports them by basename: two files
with one name stop the whole run at collection (it happened: tests/plugins/test_losses.py and tests/core/model/)."""

from collections import Counter
from pathlib import Path


def test_every_test_file_has_a_unique_basename() -> None:
    names = Counter(path.name for path in Path(__file__).parent.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
