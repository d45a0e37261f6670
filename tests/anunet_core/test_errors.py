"""one_line: any exception or string -> one readable line, the same everywhere."""

from __future__ import annotations

import json

import pytest

from anunet_core.errors import MAX_REASON_CHARS, one_line


class ScanUnreadable(ValueError):
    pass


class RegistryDown(ConnectionError):
    pass


def test_whitespace_and_newlines_are_collapsed() -> None:
    error = RuntimeError("cannot read\n  slice 3:\tbad header\r\n\n  ")
    assert one_line(error) == "RuntimeError: cannot read slice 3: bad header"


@pytest.mark.parametrize(
    "error,expected",
    [
        (ValueError("organ must be one of ('liver',), got 'lung'"), "organ must be one of ('liver',), got 'lung'"),
        (ScanUnreadable("case_001: not a NIfTI\nfile"), "case_001: not a NIfTI file"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), str(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))),
    ],
    ids=["ValueError", "subclass", "UnicodeDecodeError"],
)
def test_value_errors_are_their_message_alone(error: ValueError, expected: str) -> None:
    assert one_line(error) == expected


def test_json_decode_error_is_a_value_error() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads("{not json")
    assert one_line(caught.value) == str(caught.value)
    assert not one_line(caught.value).startswith("JSONDecodeError")


@pytest.mark.parametrize(
    "error,expected",
    [
        (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory"),
        (KeyError("liver"), "KeyError: 'liver'"),
        (FileNotFoundError(2, "No such file or directory", "/data/a.nii.gz"),
         "FileNotFoundError: [Errno 2] No such file or directory: '/data/a.nii.gz'"),
        (RegistryDown("MLflow at http://x:5000\nrefused"), "RegistryDown: MLflow at http://x:5000 refused"),
        (TypeError("expected str"), "TypeError: expected str"),
        (KeyboardInterrupt("stop"), "KeyboardInterrupt: stop"),
    ],
)
def test_other_exceptions_are_prefixed_with_their_type(error: BaseException, expected: str) -> None:
    assert one_line(error) == expected


@pytest.mark.parametrize(
    "error,expected",
    [
        (RuntimeError("RuntimeError: nested failure"), "RuntimeError: nested failure"),
        (OSError("worker died with OSError 5"), "worker died with OSError 5"),
    ],
)
def test_no_prefix_when_the_message_names_the_type(error: BaseException, expected: str) -> None:
    assert one_line(error) == expected


@pytest.mark.parametrize(
    "error,expected",
    [
        (RuntimeError(), "RuntimeError"),
        (ValueError(), "ValueError"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (RegistryDown("  \n\t "), "RegistryDown"),
        (ScanUnreadable(""), "ScanUnreadable"),
    ],
)
def test_empty_message_is_the_type_name(error: BaseException, expected: str) -> None:
    assert one_line(error) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("already one line", "already one line"),
        ("  two\nlines  ", "two lines"),
        ("", ""),
        ("RuntimeError: kept as is", "RuntimeError: kept as is"),
    ],
)
def test_strings_pass_through_collapsed(text: str, expected: str) -> None:
    assert one_line(text) == expected


def test_default_limit() -> None:
    assert MAX_REASON_CHARS == 400
    long = one_line(ValueError("x" * 1000))
    assert len(long) == 400 and long == "x" * 397 + "..."
    exact = one_line(ValueError("y" * 400))
    assert exact == "y" * 400  # at the limit: not cut


@pytest.mark.parametrize("limit", [3, 4, 10, 50, 399])
def test_long_reasons_are_cut_to_the_limit_ending_in_dots(limit: int) -> None:
    error = RuntimeError("word " * 200)
    line = one_line(error, limit=limit)
    assert len(line) == limit
    assert line.endswith("...")
    assert line == ("RuntimeError: " + " ".join(["word"] * 200))[: limit - 3] + "..."


def test_the_limit_counts_the_type_prefix_and_collapsed_whitespace() -> None:
    # "RuntimeError: " + "a b" is 17 characters: under a limit of 17 it stays whole
    assert one_line(RuntimeError("a\n\n\n\n b"), limit=17) == "RuntimeError: a b"
    assert one_line(RuntimeError("a\n\n\n\n b c"), limit=17) == "RuntimeError: ..."


def test_strings_are_cut_too() -> None:
    assert one_line("abcdefghij", limit=8) == "abcde..."
    assert one_line("abcdefgh", limit=8) == "abcdefgh"


def test_a_raised_exception_with_a_multiline_message() -> None:
    try:
        raise OSError("line one\nline two")
    except OSError as exc:
        line = one_line(exc)
    assert line == "OSError: line one line two"
    assert "\n" not in line
