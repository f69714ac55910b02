"""The one-line error helper every user-facing message goes through."""

from __future__ import annotations

from hybridprune.errors import first_line


def test_first_line_takes_the_first_line_of_the_message():
    assert first_line(RuntimeError("\n  bad shape\nTraceback details\n")) == "bad shape"


def test_first_line_of_an_empty_message_is_the_type_name():
    assert first_line(OSError()) == "OSError"
    assert first_line(ValueError("   ")) == "ValueError"
