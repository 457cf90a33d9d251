"""Static type check of a custom rule against the variables the engine binds.

The `cel` package (cel-rust underneath) parses and evaluates CEL but has no type checker:
an unknown field, an unknown variable or an operator on the wrong types only fails when the
expression runs, and `&&`/`||` absorb an error on one side when the other side decides, so
a broken rule can even pass some accounts. A rule that cannot be evaluated excludes the
account (fail closed), so an unchecked typo would reject every block.

So the expression is parsed a second time here, for checking only (`cel.compile` stays the
authority on syntax and the only evaluator), and typed bottom-up in one pass: variables and
their fields from the declared schema (`engine.custom_rules.SCHEMA`); operators and function
calls by asking the runtime itself, once per signature, on sample values of the operand
types (never on account data), so the checker accepts what the runtime can evaluate and
refuses what it cannot. Every branch is checked, whatever would short-circuit at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import cel

from engine.cel_types import (
    BOOL,
    BYTES,
    DOUBLE,
    DYN,
    INT,
    MACROS,
    NULL,
    STRING,
    TYPE,
    TYPE_NAMES,
    UINT,
    CelTypeError,
    T,
    Typed,
    article,
    binary,
    call,
    index,
    list_of,
    map_of,
    negate,
    require_bool,
    select,
)
from engine.errors import RulebookError


@dataclass(frozen=True, slots=True)
class Checked:
    """What a well-typed expression reads: per schema variable, the fields it selects, and
    the variables it uses as a whole (passed on, iterated, indexed by a computed key)."""

    fields: Mapping[str, frozenset[str]]
    whole: frozenset[str]


def validated(expr: str, schema: Mapping[str, Mapping[str, T]], path: str) -> None:
    """A rulebook's CEL expression compiled and type-checked against `schema`; a
    RulebookError names `path` (`<path>.when`) with the first line of the problem."""
    try:
        cel.compile(expr)
    except (ValueError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RulebookError(path, f"invalid expression: {first}") from None
    try:
        check(expr, schema)
    except CelTypeError as e:
        raise RulebookError(path, str(e)) from None


def check(expr: str, schema: Mapping[str, Mapping[str, T]]) -> Checked:
    """Type-check `expr` (already accepted by `cel.compile`); raise CelTypeError if it is
    not a boolean expression over `schema`."""
    checker = _Checker(expr, schema)
    result = checker.run()
    if result.ty not in (BOOL, DYN):
        raise CelTypeError(f"type error: the expression is {article(result.ty)} {result.ty}, "
                           f"not a boolean: {expr.strip()}")
    return Checked({k: frozenset(v) for k, v in checker.fields.items()},
                   frozenset(checker.whole))


# -- tokens -------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
        |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<double>(?:\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?))
  | (?P<uint>(?:0[xX][0-9a-fA-F]+|\d+)[uU])
  | (?P<int>0[xX][0-9a-fA-F]+|\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%?:.,()\[\]{}])
""", re.VERBOSE)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str


def _tokens(expr: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise CelTypeError(f"cannot type-check the expression: unexpected {expr[pos]!r} "
                               f"at offset {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group()))
    out.append(_Tok("eof", ""))
    return out


# -- values -------------------------------------------------------------------------------


# -- the checker --------------------------------------------------------------------------


@dataclass(slots=True)
class _Checker:
    expr: str
    schema: Mapping[str, Mapping[str, T]]
    toks: list[_Tok] = field(default_factory=list)
    pos: int = 0
    scopes: list[dict[str, T]] = field(default_factory=list)
    fields: dict[str, set[str]] = field(default_factory=dict)
    whole: set[str] = field(default_factory=set)

    def run(self) -> Typed:
        self.toks = _tokens(self.expr)
        v = self.expression()
        if self.peek().kind != "eof":
            self.fail(f"unexpected {self.peek().text!r}")
        return self.use(v)

    # token helpers
    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.pos + ahead, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok.kind in ("op", "ident") and tok.text == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            self.fail(f"expected {text!r}, found {self.peek().text or 'the end'!r}")

    def fail(self, why: str) -> None:
        raise CelTypeError(f"cannot type-check the expression: {why}")

    def use(self, v: Typed) -> Typed:
        """`v` is consumed as a value: a schema variable used so is read as a whole."""
        if v.var is not None:
            self.whole.add(v.var)
            return Typed(map_of(STRING, DYN), v.src)
        return v

    # grammar (CEL spec, "Syntax"), typing each production as it is parsed
    def expression(self) -> Typed:
        cond = self.binary_level(0)
        if not self.accept("?"):
            return cond
        cond = self.use(cond)
        require_bool(cond, "the condition of ?:")
        yes = self.use(self.binary_level(0))
        self.expect(":")
        no = self.use(self.expression())
        ty = yes.ty if yes.ty == no.ty else DYN
        return Typed(ty, f"{cond.src} ? {yes.src} : {no.src}")

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",), ("&&",), ("<", "<=", ">=", ">", "==", "!=", "in"), ("+", "-"), ("*", "/", "%"))

    def binary_level(self, level: int) -> Typed:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary_level(level + 1)
        ops = self._LEVELS[level]
        while (self.peek().kind in ("op", "ident")) and self.peek().text in ops:
            op = self.take().text
            right = self.binary_level(level + 1)
            left = binary(op, self.use(left), self.use(right))
        return left

    def unary(self) -> Typed:
        if self.peek().kind == "op" and self.peek().text in ("!", "-"):
            op = self.take().text
            v = self.use(self.unary())
            src = f"{op}{v.src}"
            if op == "!":
                require_bool(v, "the operand of !")
                return Typed(BOOL, src)
            return negate(v)
        return self.member(self.primary())

    def member(self, v: Typed, *, for_has: bool = False) -> Typed:
        while True:
            if self.accept("."):
                tok = self.take()
                if tok.kind != "ident":
                    self.fail(f"expected a field name after '.', found {tok.text!r}")
                name = tok.text
                if self.peek().text == "(" and self.peek().kind == "op":
                    self.take()
                    v = self.method(v, name)
                elif for_has and self.peek().text == ")":
                    self.select(v, name, for_has=True)
                    return Typed(BOOL, f"has({v.src}.{name})")
                else:
                    v = self.select(v, name)
            elif self.accept("["):
                key = self.use(self.expression())
                self.expect("]")
                v = self.index(v, key)
            else:
                if for_has:
                    self.fail("has() needs a field selection such as has(account.tier)")
                return v

    def select(self, v: Typed, name: str, *, for_has: bool = False) -> Typed:
        """`v.name`: a schema variable's field, or a map's entry."""
        src = f"{v.src}.{name}"
        if v.var is not None:
            known = self.schema[v.var]
            if name not in known:
                raise CelTypeError(f"unknown field {src}; known fields: {', '.join(known)}")
            self.fields.setdefault(v.var, set()).add(name)
            return Typed(known[name], src)
        return select(v, name, for_has=for_has)

    def index(self, v: Typed, key: Typed) -> Typed:
        if v.var is not None:
            if key.literal and key.ty == STRING:
                return self.select(v, str(cel.compile(key.src).execute({})))
            v = self.use(v)
        return index(v, key)

    def arguments(self) -> list[Typed]:
        args: list[Typed] = []
        if not self.accept(")"):
            while True:
                args.append(self.use(self.expression()))
                if self.accept(")"):
                    break
                self.expect(",")
        return args

    def method(self, recv: Typed, name: str) -> Typed:
        if name in MACROS:
            return self.macro(self.use(recv), name)
        args = self.arguments()
        return call(name, [self.use(recv), *args], receiver=True)

    def macro(self, recv: Typed, name: str) -> Typed:
        tok = self.take()
        if tok.kind != "ident":
            self.fail(f"{name}() needs a variable name first, found {tok.text!r}")
        self.expect(",")
        if recv.ty.name in ("list", "map"):
            elem = recv.ty.args[0]  # a map iterates its keys
        elif recv.ty == DYN:
            elem = DYN
        else:
            raise CelTypeError(f"type error: {name}() needs a list or a map, not "
                               f"{article(recv.ty)} {recv.ty} (in {recv.src}.{name})")
        self.scopes.append({tok.text: elem})
        try:
            first = self.use(self.expression())
            second: Typed | None = None
            if self.accept(","):
                second = self.use(self.expression())
            self.expect(")")
        finally:
            self.scopes.pop()
        src = f"{recv.src}.{name}({tok.text}, {first.src}{', ...' if second else ''})"
        if name == "map":
            if second is not None:
                require_bool(first, f"the filter of {name}()")
            return Typed(list_of((second or first).ty), src)
        if second is not None:
            self.fail(f"{name}() takes a variable and one expression")
        require_bool(first, f"the predicate of {name}()")
        return Typed(list_of(elem) if name == "filter" else BOOL, src)

    def primary(self) -> Typed:
        tok = self.take()
        if tok.kind == "op":
            if tok.text == "(":
                v = self.expression()
                self.expect(")")
                return Typed(v.ty, f"({v.src})", literal=v.literal, var=v.var)
            if tok.text == "[":
                return self.list_literal()
            if tok.text == "{":
                return self.map_literal()
            if tok.text == ".":
                nxt = self.take()
                raise CelTypeError(f"unknown variable .{nxt.text}; known variables: "
                                   f"{', '.join(self.schema)}")
            self.fail(f"unexpected {tok.text!r}")
        if tok.kind == "ident":
            return self.identifier(tok.text)
        if tok.kind == "eof":
            self.fail("the expression ends too early")
        ty = {"int": INT, "uint": UINT, "double": DOUBLE}.get(tok.kind)
        if ty is None:
            ty = BYTES if tok.text[:2].lower() in ("b'", 'b"', "br", "rb") else STRING
        return Typed(ty, tok.text, literal=True)

    def identifier(self, name: str) -> Typed:
        if name in ("true", "false"):
            return Typed(BOOL, name, literal=True)
        if name == "null":
            return Typed(NULL, name, literal=True)
        if self.peek().text == "(" and self.peek().kind == "op":
            self.take()
            if name == "has":
                v = self.member(self.primary(), for_has=True)
                self.expect(")")
                return v
            return call(name, self.arguments(), receiver=False)
        for scope in reversed(self.scopes):
            if name in scope:
                return Typed(scope[name], name)
        if name in self.schema:
            return Typed(map_of(STRING, DYN), name, var=name)
        if name in TYPE_NAMES:
            return Typed(TYPE, name)
        if self.peek().text == "{" and self.peek().kind == "op":
            self.fail(f"message construction {name}{{...}} is not supported")
        raise CelTypeError(f"unknown variable {name}; known variables: "
                           f"{', '.join(self.schema)}")

    def list_literal(self) -> Typed:
        items: list[Typed] = []
        while not self.accept("]"):
            items.append(self.use(self.expression()))
            if not self.accept(","):
                self.expect("]")
                break
        types = {v.ty for v in items}
        elem = types.pop() if len(types) == 1 else DYN
        return Typed(list_of(elem), "[" + ", ".join(v.src for v in items) + "]")

    def map_literal(self) -> Typed:
        keys: set[T] = set()
        values: set[T] = set()
        parts: list[str] = []
        while not self.accept("}"):
            k = self.use(self.expression())
            self.expect(":")
            v = self.use(self.expression())
            keys.add(k.ty)
            values.add(v.ty)
            parts.append(f"{k.src}: {v.src}")
            if not self.accept(","):
                self.expect("}")
                break
        key = keys.pop() if len(keys) == 1 else DYN
        value = values.pop() if len(values) == 1 else DYN
        return Typed(map_of(key, value), "{" + ", ".join(parts) + "}")
