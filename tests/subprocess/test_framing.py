"""JsonlFramer and parse_record: any split, any bytes, no unbounded buffering."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chia_async.errors import OutputLineTooLongError
from chia_async.subprocess.framing import (
    Diagnostic,
    JsonlFramer,
    decode_line,
    parse_record,
    parse_records,
)

BOM = b"\xef\xbb\xbf"


def frame(chunks: list[bytes], limit: int = 1 << 30) -> list[bytes]:
    framer = JsonlFramer(limit)
    lines: list[bytes] = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
    lines.extend(framer.flush())
    return lines


def reference_lines(data: bytes) -> list[bytes]:
    """What the framer must produce, computed on the whole stream at once."""
    if data.startswith(BOM):
        data = data[3:]
    lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    return [line for line in lines if line]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# -- framing ----------------------------------------------------------------------------------


def test_lines_in_one_chunk() -> None:
    assert frame([b'{"a":1}\n{"b":2}\n']) == [b'{"a":1}', b'{"b":2}']


def test_a_line_split_over_many_chunks() -> None:
    assert frame([b'{"a":', b"12", b"3}\n{", b'"b":2}\n']) == [b'{"a":123}', b'{"b":2}']


def test_crlf_including_a_crlf_split_between_chunks() -> None:
    assert frame([b"one\r\ntwo\r", b"\nthree\r\n"]) == [b"one", b"two", b"three"]


def test_only_one_trailing_cr_is_stripped() -> None:
    assert frame([b"a\r\r\n", b"b\r", b"\r\n"]) == [b"a\r", b"b\r"]


def test_a_lone_cr_inside_a_line_is_kept() -> None:
    assert frame([b"a\rb\n"]) == [b"a\rb"]


def test_leading_bom_is_dropped_even_when_split() -> None:
    assert frame([b"\xef", b"\xbb", b'\xbf{"a":1}\n', BOM + b"x\n"]) == [b'{"a":1}', BOM + b"x"]


def test_multibyte_character_split_between_chunks() -> None:
    data = '{"t":"café ☕ 𝄞"}\n'.encode()
    for cut in range(len(data)):
        lines = frame([data[:cut], data[cut:]])
        assert lines == [data[:-1]]
        assert parse_record(lines[0]) == {"t": "café ☕ 𝄞"}


def test_empty_lines_are_skipped() -> None:
    assert frame([b"\n\na\n\r\n\nb\n"]) == [b"a", b"b"]


def test_flush_returns_the_unterminated_last_line() -> None:
    framer = JsonlFramer()
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.feed(b":2}") == []
    assert framer.flush() == [b'{"b":2}']
    assert framer.flush() == []


def test_flush_strips_bom_and_cr_of_a_single_unterminated_line() -> None:
    framer = JsonlFramer()
    framer.feed(BOM + b"x\r")
    assert framer.flush() == [b"x"]


def test_line_exactly_at_the_limit_passes_one_more_byte_fails() -> None:
    assert frame([b"x" * 10 + b"\n"], limit=10) == [b"x" * 10]
    with pytest.raises(OutputLineTooLongError):
        frame([b"x" * 11 + b"\n"], limit=10)


def test_oversized_line_fails_before_it_is_held_in_full() -> None:
    framer = JsonlFramer(1000, node_id="n1")
    chunk = b"y" * 300
    with pytest.raises(OutputLineTooLongError) as info:
        for _ in range(100):  # 30 000 bytes offered; the framer must give up after ~1000
            framer.feed(chunk)
            assert framer.buffered <= 1000
    error = info.value
    assert error.node_id == "n1"
    assert not error.retryable
    assert "1000" in str(error)
    assert framer.buffered == 0  # released, not kept around
    with pytest.raises(RuntimeError):
        framer.feed(b"more\n")


def test_oversized_line_inside_a_chunk_bigger_than_the_limit() -> None:
    with pytest.raises(OutputLineTooLongError):
        frame([b"ok\n" + b"z" * 50 + b"\nok\n"], limit=20)


def test_oversized_line_completed_by_the_next_chunk() -> None:
    with pytest.raises(OutputLineTooLongError):
        frame([b"a" * 8, b"a" * 5 + b"\n"], limit=10)


def test_line_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        JsonlFramer(0)


# -- parsing ----------------------------------------------------------------------------------


def test_parse_an_object_from_bytes_and_from_str() -> None:
    assert parse_record(b'{"type":"x","n":1}') == {"type": "x", "n": 1}
    assert parse_record('{"type":"x"}') == {"type": "x"}


@pytest.mark.parametrize(
    "line",
    [b"Starting up...", b"[1, 2]", b'"text"', b"42", b"null", b"{truncated", b"   ", b"{}x"],
)
def test_anything_but_an_object_is_a_diagnostic(line: bytes) -> None:
    assert parse_record(line) == Diagnostic(line.decode())


def test_invalid_utf8_inside_a_string_is_replaced_not_raised() -> None:
    assert parse_record(b'{"t":"caf\xc3\xa9 \xff ok"}') == {"t": "café \ufffd ok"}
    assert parse_record(b"noise \xff\xfe") == Diagnostic("noise \ufffd\ufffd")
    assert decode_line(b"\xc3") == "\ufffd"


def test_escapes_orjson_refuses_still_parse() -> None:
    # a JS string cut between the halves of a surrogate pair, as JSON.stringify prints it
    record = parse_record(b'{"t":"cut \\ud83d here","u":"\\udc00","ok":"\\ud83d\\ude00"}')
    assert record == {"t": "cut \ufffd here", "u": "\ufffd", "ok": "\U0001f600"}
    assert isinstance(record, dict)
    record["t"].encode("utf-8")  # safe to log and re-serialise
    nan = parse_record(b'{"a": NaN, "b": [Infinity]}')
    assert isinstance(nan, dict)
    assert nan["b"] == [float("inf")]


def test_nesting_beyond_every_parser_is_a_diagnostic() -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    assert isinstance(parse_record(deep), Diagnostic)


def test_parse_records_matches_parse_record() -> None:
    lines = [b'{"a":1}', b"noise", b"[1]", b'{"t":"\xff"}', b'{"b":{"c":[1,2]}}']
    assert parse_records(lines) == [parse_record(line) for line in lines]


# -- properties -------------------------------------------------------------------------------

# Pieces that stress the edges: CR/LF in every combination, a BOM, multi-byte and invalid
# UTF-8, JSON and non-JSON text.
_pieces = st.sampled_from(
    [b"\n", b"\r", b"\r\n", BOM, b"\xc3\xa9", b"\xe2\x98\x95", b"\xff", b'{"a":1}', b"x", b" "]
)
_streams = st.lists(_pieces, max_size=60).map(b"".join)


@given(data=_streams, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20))
@settings(max_examples=400, deadline=None)
def test_any_split_yields_the_same_lines(data: bytes, cuts: list[int]) -> None:
    chunks = split_at(data, cuts)
    assert b"".join(chunks) == data
    assert frame(chunks) == frame([data]) == reference_lines(data)


@given(
    data=_streams,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20),
    limit=st.integers(min_value=1, max_value=30),
)
@settings(max_examples=300, deadline=None)
def test_the_line_limit_does_not_depend_on_the_split(
    data: bytes, cuts: list[int], limit: int
) -> None:
    raw_lines = data.split(b"\n")
    too_long = any(len(line) > limit for line in raw_lines)
    for chunks in (split_at(data, cuts), [data]):
        if too_long:
            with pytest.raises(OutputLineTooLongError):
                frame(chunks, limit)
        else:
            assert frame(chunks, limit) == reference_lines(data)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parse_record_never_raises(line: bytes) -> None:
    record = parse_record(line)
    assert isinstance(record, dict | Diagnostic)
