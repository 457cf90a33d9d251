"""JSON text parsed with the line of every object key and array item; numbers as Decimal.

The standard library's decoder gives no positions for what it parsed, only for syntax
errors. This runs the same decoder (its pure-Python scanner, with the stdlib's own object
and array parsers) and wraps the two hooks it calls for `{` and `[` so each object records
the line of its opening brace and of every key, and each array the line of every item.
A key repeated within one object is refused with both lines (the stdlib keeps the last).
Non-integer numbers (and NaN/Infinity) become `Decimal`; integers stay `int`.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

_decoder: Any = json.decoder
_scanner: Any = json.scanner
_WS = " \t\n\r"


class JSONLocationError(ValueError):
    """Invalid JSON (or a repeated key) at a line; `key` names the key when there is one."""

    def __init__(self, line: int, key: str | None, reason: str) -> None:
        self.line, self.key, self.reason = line, key, reason
        super().__init__(f"{line}: {key + ': ' if key else ''}{reason}")


class JSONObject(dict[str, Any]):
    """A decoded object with `line` (its `{`) and `key_lines` (the line of each key)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """The line of `key`, or of the object itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class JSONArray(list[Any]):
    """A decoded array with `line` (its `[`) and `item_lines` (where each item starts)."""

    line: int = 0
    item_lines: list[int]


def loads(text: str) -> Any:
    """Parse `text` as JSON; objects and arrays come back as JSONObject / JSONArray."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_at(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    def key_line(s: str, value_at: int) -> int:
        # Back over `"key" :` from the value's first character to the key's closing quote.
        i = value_at
        while i > 0 and s[i - 1] in _WS:
            i -= 1
        i -= 1  # the colon
        while i > 0 and s[i - 1] in _WS:
            i -= 1
        return line_at(i - 1)

    def recording(scan_once: Callable[[str, int], Any], starts: list[int]
                  ) -> Callable[[str, int], Any]:
        def scan(s: str, idx: int) -> Any:
            starts.append(idx)
            return scan_once(s, idx)
        return scan

    def parse_object(s_and_end: tuple[str, int], strict: bool,
                     scan_once: Callable[[str, int], Any], object_hook: Any,
                     object_pairs_hook: Any, memo: Any = None) -> tuple[JSONObject, int]:
        s, start = s_and_end
        starts: list[int] = []
        pairs: list[tuple[str, Any]] = []
        _, end = _decoder.JSONObject(s_and_end, strict, recording(scan_once, starts), None,
                                     pairs.extend, memo)
        obj = JSONObject()
        obj.line, obj.key_lines = line_at(start - 1), {}
        for (key, value), at in zip(pairs, starts, strict=True):
            line = key_line(s, at)
            if key in obj.key_lines:
                raise JSONLocationError(line, key, f"repeated key (first on line "
                                                   f"{obj.key_lines[key]})")
            obj[key] = value
            obj.key_lines[key] = line
        return obj, end

    def parse_array(s_and_end: tuple[str, int], scan_once: Callable[[str, int], Any]
                    ) -> tuple[JSONArray, int]:
        starts: list[int] = []
        values, end = _decoder.JSONArray(s_and_end, recording(scan_once, starts))
        arr = JSONArray(values)
        arr.line, arr.item_lines = line_at(s_and_end[1] - 1), [line_at(i) for i in starts]
        return arr, end

    dec: Any = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)
    dec.parse_object, dec.parse_array = parse_object, parse_array
    dec.memo = {}
    dec.scan_once = _scanner.py_make_scanner(dec)
    try:
        return dec.decode(text)
    except json.JSONDecodeError as e:
        raise JSONLocationError(e.lineno, None, f"invalid JSON: {e.msg}") from None
