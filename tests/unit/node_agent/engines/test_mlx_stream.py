"""The MLX engine's incremental decoder, over a byte-level toy vocabulary."""

from __future__ import annotations

from node_agent.engines.mlx_stream import MAX_HELD, IncrementalDecoder

SNOWMAN = "☃".encode()  # three bytes
VOCAB = {0: b"a", 1: b" b", 2: SNOWMAN[:1], 3: SNOWMAN[1:2], 4: SNOWMAN[2:], 5: b"", 6: b"\xff"}


def decode(ids: list[int]) -> str:
    """Decode the toy vocabulary the way a byte-level BPE tokenizer does."""
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", "replace")


def pieces(ids: list[int]) -> list[str]:
    """Every piece the decoder emits for `ids`, its flush last."""
    decoder = IncrementalDecoder(decode)
    return [decoder.add(i) for i in ids] + [decoder.flush()]


def test_a_character_split_over_tokens_comes_out_whole() -> None:
    out = pieces([0, 2, 3, 4, 1])
    assert out == ["a", "", "", "☃", " b", ""]


def test_leading_spaces_are_kept() -> None:
    assert "".join(pieces([1, 1])) == " b b"


def test_tokens_that_decode_to_nothing_keep_the_window_short() -> None:
    windows: list[int] = []

    def counting(ids: list[int]) -> str:
        windows.append(len(ids))
        return decode(ids)

    decoder = IncrementalDecoder(counting)
    assert [decoder.add(5) for _ in range(MAX_HELD * 4)] == [""] * MAX_HELD * 4
    assert decoder.add(0) == "a"
    assert max(windows) <= 2 * MAX_HELD


def test_invalid_bytes_are_released_as_replacement_characters() -> None:
    out = pieces([6] * MAX_HELD + [0])
    assert "".join(out) == "\ufffd" * MAX_HELD + "a"
    assert out[-2:] == ["a", ""]
