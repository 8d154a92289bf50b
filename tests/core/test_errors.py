"""``one_line``: every error recplug prints, and every library message it quotes, is one line; ``check_number``
with ``integer``: a count or size is an ``int``."""

from __future__ import annotations

import numpy as np
import pytest

from recplug.core.errors import InvalidArgument, check_number, one_line


def test_lines_are_stripped_and_joined_and_blank_ones_dropped() -> None:
    assert one_line("  first problem \n\n\tsecond  one\r\n") == "first problem; second  one"
    assert one_line(ValueError("a\nb")) == "a; b"
    assert one_line("") == ""


def test_a_limit_cuts_the_line_and_says_so() -> None:
    assert one_line("x" * 100, limit=80) == "x" * 80 + "..."
    assert one_line("short\nenough", limit=80) == "short; enough"
    assert one_line("x" * 100) == "x" * 100  # no limit: the whole message


def test_an_integer_argument_refuses_floats_and_bools_and_says_so() -> None:
    check_number("model", "k", np.int64(3), 1, 10, integer=True)  # numpy integers are integers
    for value, rule in ((2.5, "an integer in [1, 10]"), (2.0, "an integer in [1, 10]"), (True, "an integer in [1, 10]"),
                        (11, "in [1, 10]")):
        with pytest.raises(InvalidArgument) as info:
            check_number("model", "k", value, 1, 10, integer=True)
        assert str(info.value) == f"model.k must be {rule}, got {value!r}"
    with pytest.raises(InvalidArgument, match=r"^model\.k must be an integer, got 'x'$"):
        check_number("model", "k", "x", integer=True)
