"""Stop strings over streamed text: nothing of a stop string is emitted, nothing else is lost."""

from __future__ import annotations

import pytest

from node_agent.stops import Scan, StopFilter, scan


def stream(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    """The pieces a StopFilter emits (its flush last) and whether it stopped."""
    f = StopFilter(stops)
    out = [f.feed(p) for p in pieces]
    out.append(f.flush())
    return out, f.stopped


def test_scan_cuts_at_the_earliest_stop() -> None:
    assert scan("abc END def STOP", ["STOP", "END"]) == Scan("abc ", "", True, "END")


def test_scan_holds_a_possible_stop_prefix() -> None:
    assert scan("hello wor", ["world!"]) == Scan("hello ", "wor", False)


def test_scan_holds_the_longest_possible_prefix_over_all_stops() -> None:
    assert scan("xaab", ["aab!", "b?"]) == Scan("x", "aab", False)


def test_scan_emits_everything_when_nothing_could_start_a_stop() -> None:
    assert scan("plain text", ["###"]) == Scan("plain text", "", False)


def test_stop_split_across_pieces_is_never_emitted() -> None:
    out, stopped = stream(["Hello, wo", "rl", "d! and more"], ("world",))
    assert stopped
    assert "".join(out) == "Hello, "


def test_held_text_is_released_when_the_stop_does_not_follow() -> None:
    out, stopped = stream(["a <", "<", "b"], ("<<<",))
    assert not stopped
    assert "".join(out) == "a <<b"
    assert out[0] == "a "  # "<" waited until it could not be a stop any more


def test_flush_releases_a_trailing_partial_stop() -> None:
    out, stopped = stream(["the end </"], ("</s>",))
    assert not stopped
    assert out == ["the end ", "</"]


def test_nothing_is_emitted_after_a_stop() -> None:
    f = StopFilter(["\n\n"])
    assert f.feed("one\n\ntwo") == "one"
    assert f.feed("three") == ""
    assert f.flush() == ""


def test_no_stops_passes_text_through() -> None:
    out, stopped = stream(["a", "b"], ())
    assert out == ["a", "b", ""]
    assert not stopped


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("abcabd", ("abd",), "abc"),  # a failed partial match must not hide the real one
        ("日本語です", ("です",), "日本語"),
        ("stop at start", ("stop",), ""),
    ],
)
def test_char_by_char_matches_whole_text(text: str, stops: tuple[str, ...], expected: str) -> None:
    out, stopped = stream(list(text), stops)
    assert stopped
    assert "".join(out) == expected
