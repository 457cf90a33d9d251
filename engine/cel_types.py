"""CEL types and the typing rules of the custom-rule checker.

`engine.cel_check` parses an expression and types it bottom-up with the rules here, one per
kind of operation. Logical operators and (in)equality follow CEL's checker; every other
operator and call asks `probe`, which evaluates the operation once on sample values of the
operand types with the real runtime (`cel`), so what the checker accepts is what the runtime
can evaluate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cel


class CelTypeError(ValueError):
    """The expression does not type-check; the message says where and why."""


@dataclass(frozen=True, slots=True)
class T:
    """A CEL type: a primitive name, or list/map with their parameters."""

    name: str
    args: tuple[T, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.args))})" if self.args else self.name


INT, UINT, DOUBLE, BOOL = T("int"), T("uint"), T("double"), T("bool")
STRING, BYTES, NULL, DYN = T("string"), T("bytes"), T("null"), T("dyn")
TIMESTAMP, DURATION, TYPE = T("timestamp"), T("duration"), T("type")


def list_of(elem: T) -> T:
    return T("list", (elem,))


def map_of(key: T, value: T) -> T:
    return T("map", (key, value))


NUMERIC = frozenset({INT, UINT, DOUBLE})
TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map",
                         "null_type", "type", "dyn"})
# Names the runtime knows; a failed call to one of these is a wrong overload, to any other
# an unknown function (the runtime reports both as an undefined name).
KNOWN_FUNCTIONS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double",
    "string", "bytes", "timestamp", "duration", "type", "dyn", "getFullYear", "getMonth",
    "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes",
    "getSeconds", "getMilliseconds",
})
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# A string argument of a conversion is sampled as a valid value of the target type.
STRING_SAMPLE = {"int": "7", "uint": "7", "double": "2.5", "timestamp": "2024-01-01T00:00:00Z",
                  "duration": "1s"}


def article(ty: T) -> str:
    return "an" if str(ty)[0] in "aeiou" else "a"



_SAMPLES: dict[T, Any] = {
    INT: 7, DOUBLE: 2.5, BOOL: True, STRING: "s", BYTES: b"s", NULL: None,
    TIMESTAMP: dt.datetime(2024, 1, 1, tzinfo=dt.UTC), DURATION: dt.timedelta(seconds=1),
}


def sample(ty: T, fn: str = "") -> Any:
    """A Python value the runtime binds as a value of `ty` (NotImplemented if none)."""
    if ty == STRING:
        return STRING_SAMPLE.get(fn, "s")
    if ty in _SAMPLES:
        return _SAMPLES[ty]
    if ty.name == "list":
        elem = sample(ty.args[0])
        return NotImplemented if elem is NotImplemented else [elem]
    if ty.name == "map":
        k, v = sample(ty.args[0]), sample(ty.args[1])
        if k is NotImplemented or v is NotImplemented or not isinstance(k, str | int | bool):
            return NotImplemented
        return {k: v}
    return NotImplemented  # uint, type and dyn have no Python value that binds as them


def type_of(value: Any) -> T:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, bytes):
        return BYTES
    if value is None:
        return NULL
    if isinstance(value, dt.datetime):
        return TIMESTAMP
    if isinstance(value, dt.timedelta):
        return DURATION
    if isinstance(value, list):
        return list_of(type_of(value[0]) if value else DYN)
    if isinstance(value, dict):
        if not value:
            return map_of(DYN, DYN)
        k, v = next(iter(value.items()))
        return map_of(type_of(k), type_of(v))
    return DYN


_PROBES: dict[tuple[Any, ...], T | BaseException | None] = {}


def probe(template: str, operands: Sequence[tuple[T, str | None]], fn: str = ""
          ) -> T | BaseException | None:
    """Evaluate `template` ({0}, {1}, ... for the operands) on sample values of the operand
    types: the result's type, the runtime's error when it has no such overload, or None when
    that is not known (an operand is `dyn`, or the sample values themselves fail)."""
    names: list[str] = []
    binding: dict[str, Any] = {}
    key: list[Any] = [template, fn]
    for i, (ty, literal) in enumerate(operands):
        if literal is not None:
            names.append(f"({literal})")
            key.append(literal)
            continue
        if ty == UINT:
            names.append("7u")
            key.append(UINT)
            continue
        value = sample(ty, fn)
        if value is NotImplemented:
            return None
        names.append(f"_v{i}")
        binding[f"_v{i}"] = value
        key.append(ty)
    k = tuple(key)
    if k not in _PROBES:
        got: T | BaseException | None
        try:
            got = type_of(cel.compile(template.format(*names)).execute(binding))
        except TypeError as e:  # no such overload
            got = e
        except RuntimeError as e:
            # An unknown function, or a known one without this overload; anything else is
            # about the sample values, not the types.
            got = e if "Undefined variable or function" in str(e) else None
        except Exception:  # e.g. an overflow on a literal: defined, result type unknown
            got = None
        if len(_PROBES) > 4096:
            _PROBES.clear()
        _PROBES[k] = got
    return _PROBES[k]


@dataclass(frozen=True, slots=True)
class Typed:
    """A typed subexpression."""

    ty: T
    src: str                  # source text, for messages
    literal: bool = False     # a literal: probed as written
    var: str | None = None    # exactly this schema variable


RELATIONS = frozenset({"<", "<=", ">=", ">", "==", "!=", "in"})


def operand(v: Typed) -> tuple[T, str | None]:
    """How `probe` sees a value: its type, and its text when it is a literal."""
    return v.ty, v.src if v.literal else None


# -- typing rules, one per kind of operation ------------------------------------------------


def binary(op: str, a: Typed, b: Typed) -> Typed:
    """`a op b`: logical operators need booleans, (in)equality comparable types, the rest
    what the runtime defines."""
    src = f"{a.src} {op} {b.src}"
    if op in ("&&", "||"):
        if a.ty not in (BOOL, DYN) or b.ty not in (BOOL, DYN):
            raise CelTypeError(f"type error: {a.ty} {op} {b.ty}: both operands must be "
                               f"booleans (in {src})")
        return Typed(BOOL, src)
    if op in ("==", "!="):
        comparable(a.ty, b.ty, op, src)
        return Typed(BOOL, src)
    if op == "in" and b.ty.name in ("list", "map"):
        comparable(a.ty, b.ty.args[0], op, src, container=b.ty)
    got = probe(f"{{0}} {op} {{1}}", (operand(a), operand(b)))
    if got is None:
        return Typed(BOOL if op in RELATIONS else DYN, src)
    if isinstance(got, BaseException):
        raise CelTypeError(f"type error: {a.ty} {op} {b.ty} is not defined (in {src})")
    if got == INT and a.ty == UINT and b.ty == UINT:
        got = UINT
    return Typed(got, src, literal=a.literal and b.literal)


def comparable(a: T, b: T, op: str, src: str, container: T | None = None) -> None:
    # The runtime answers false for values of different types; a checker refuses the
    # comparison, since it can never hold (a typo such as account.tier == '3').
    if DYN in (a, b) or NULL in (a, b) or a == b or (a in NUMERIC and b in NUMERIC):
        return
    if a.name == b.name and a.name in ("list", "map"):
        return
    other = f"{b} elements" if container is not None else f"{article(b)} {b}"
    raise CelTypeError(f"type error: {a} {op} {container or b} compares {article(a)} "
                       f"{a} with {other}, which can never be equal (in {src})")


def require_bool(v: Typed, what: str) -> None:
    if v.ty not in (BOOL, DYN):
        raise CelTypeError(f"type error: {what} is {article(v.ty)} {v.ty}, not a boolean "
                           f"(in {v.src})")


def negate(v: Typed) -> Typed:
    src = f"-{v.src}"
    if v.literal:
        return Typed(v.ty, src, literal=True)
    got = probe("-{0}", (operand(v),))
    if isinstance(got, BaseException):
        raise CelTypeError(f"type error: -{v.ty} is not defined (in {src})")
    return Typed(v.ty if got is None else got, src)


def select(v: Typed, name: str, *, for_has: bool = False) -> Typed:
    """`v.name` on a value that is not a schema variable."""
    src = f"{v.src}.{name}"
    if v.ty == DYN:
        return Typed(DYN, src)
    if v.ty.name == "map" and v.ty.args[0] in (STRING, DYN):
        return Typed(v.ty.args[1], src)
    what = "has()" if for_has else f"field {name}"
    raise CelTypeError(f"type error: {article(v.ty)} {v.ty} has no {what} (in {src})")


def index(v: Typed, key: Typed) -> Typed:
    """`v[key]` on a value that is not a schema variable."""
    src = f"{v.src}[{key.src}]"
    got = probe("{0}[{1}]", (operand(v), operand(key)))
    if isinstance(got, BaseException):
        raise CelTypeError(f"type error: {article(v.ty)} {v.ty} cannot be indexed by "
                           f"{article(key.ty)} {key.ty} (in {src})")
    if v.ty.name == "list":
        return Typed(v.ty.args[0], src)
    if v.ty.name == "map":
        return Typed(v.ty.args[1], src)
    return Typed(DYN if got is None else got, src)


def call(name: str, args: list[Typed], *, receiver: bool) -> Typed:
    """`name(args...)`, or `args[0].name(args[1:]...)` with a receiver."""
    slots = ", ".join(f"{{{i}}}" for i in range(1 if receiver else 0, len(args)))
    template = f"{{0}}.{name}({slots})" if receiver else f"{name}({slots})"
    parts = [a.src for a in args]
    src = (f"{parts[0]}.{name}({', '.join(parts[1:])})" if receiver
           else f"{name}({', '.join(parts)})")
    if name == "type":
        return Typed(TYPE, src)
    got = probe(template, [operand(a) for a in args], name)
    if isinstance(got, BaseException):
        sig = ", ".join(str(a.ty) for a in args)
        if name in KNOWN_FUNCTIONS:
            raise CelTypeError(f"type error: no overload {name}({sig}) (in {src})")
        raise CelTypeError(f"unknown function {name} (in {src})")
    if got is None:
        return Typed(DYN, src)
    if name == "uint" and got == INT:
        got = UINT
    return Typed(got, src)
