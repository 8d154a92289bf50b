"""``one_line``: every error recplug prints, and every library message it quotes, is one line."""

from __future__ import annotations

from recplug.core.errors import one_line


def test_lines_are_stripped_and_joined_and_blank_ones_dropped() -> None:
    assert one_line("  first problem \n\n\tsecond  one\r\n") == "first problem; second  one"
    assert one_line(ValueError("a\nb")) == "a; b"
    assert one_line("") == ""


def test_a_limit_cuts_the_line_and_says_so() -> None:
    assert one_line("x" * 100, limit=80) == "x" * 80 + "..."
    assert one_line("short\nenough", limit=80) == "short; enough"
    assert one_line("x" * 100) == "x" * 100  # no limit: the whole message
