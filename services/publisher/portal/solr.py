"""The Solr/Lucene query syntax CKAN clients send in `q` and `fq`, parsed by a grammar into a small typed tree.

Covers what CKAN's clients and harvesters use: free-text terms and quoted phrases, `field:value`,
`field:"phrase"`, `field:(a OR b)`, ranges `field:[a TO b]` / `{a TO b}` with `*` for an open end, the boolean
operators `AND`, `OR`, `NOT`, `&&`, `||`, `!`, the prefixes `+` (required) and `-` (negation), parentheses and
`*:*`. Terms next to each other are combined with AND (CKAN's Solr schema sets `q.op` to AND). Escapes with a
backslash (`\\:`) are honoured. The tree says nothing about SQL; `repository.ckan_search` compiles it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, VisitError

GRAMMAR = r"""
?start: or_expr?

?or_expr: and_expr (_or and_expr)*
?and_expr: unary (_and? unary)*
?unary: _not unary          -> negation
      | "-" unary           -> negation
      | "+" unary
      | atom
?atom: "(" or_expr ")"
     | FIELD ":" value      -> fielded
     | PHRASE               -> phrase
     | WORD                 -> word
     | "*" ":" "*"          -> match_all
     | "*"                  -> match_all

?value: "(" value_or ")"    -> group
      | range
      | PHRASE              -> phrase
      | WORD                -> word
      | "*"                 -> any_value
?value_or: value_and (_or value_and)*
?value_and: value_unary (_and? value_unary)*
?value_unary: _not value_unary   -> negation
            | "-" value_unary    -> negation
            | "+" value_unary
            | value

range: LOWER bound "TO" bound UPPER
?bound: BOUND | "*" -> open_bound

LOWER: "[" | "{"
UPPER: "]" | "}"
_or: "OR" | "||"
_and: "AND" | "&&"
_not: "NOT" | "!"
FIELD.2: /[A-Za-z_][A-Za-z0-9_.]*(?=:)/
PHRASE: /"(?:\\.|[^"\\])*"/
WORD: /(?:\\.|[^\s()"\[\]{}:+\-!\\*])(?:\\.|[^\s()"\[\]{}\\])*/
BOUND: /(?:\\.|[^\s\[\]{}\\*])(?:\\.|[^\s\[\]{}\\])*/

%import common.WS
%ignore WS
"""

_ESCAPE = re.compile(r"\\(.)")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


# --- the tree -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchAll:
    """`*:*`, an empty query, or `field:*`."""


@dataclass(frozen=True, slots=True)
class Term:
    """A value, optionally bound to a field (None = free text); `prefix` for a trailing `*` wildcard."""

    field: str | None
    value: str
    phrase: bool = False
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """`field:[low TO high]` (inclusive) or `{...}` (exclusive); None = open end."""

    field: str
    low: str | None
    high: str | None
    low_inclusive: bool = True
    high_inclusive: bool = True


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = MatchAll | Term | Range | And | Or | Not


class QuerySyntaxError(ValueError):
    """The text is not a query of the supported syntax; the message says where."""


# --- grammar to tree ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unfielded:
    """A value inside `field:(...)` before the field is applied."""

    value: str
    phrase: bool = False
    any: bool = False


@dataclass(frozen=True, slots=True)
class _Bounds:
    low: str | None
    high: str | None
    low_inclusive: bool
    high_inclusive: bool


def _with_field(field: str, node: Any) -> Node:
    """Apply `field` to every value below a `field:` (grouped values, ranges)."""
    if isinstance(node, _Unfielded):
        if node.any:
            return MatchAll()
        prefix = not node.phrase and node.value.endswith("*") and not node.value.endswith("\\*")
        value = node.value[:-1] if prefix else node.value
        return Term(field, value, phrase=node.phrase, prefix=prefix)
    if isinstance(node, _Bounds):
        return Range(field, node.low, node.high, node.low_inclusive, node.high_inclusive)
    if isinstance(node, And):
        return And(tuple(_with_field(field, i) for i in node.items))
    if isinstance(node, Or):
        return Or(tuple(_with_field(field, i) for i in node.items))
    if isinstance(node, Not):
        return Not(_with_field(field, node.item))
    raise QuerySyntaxError(f"unexpected value below {field}:")


@v_args(inline=True)
class _ToTree(Transformer[Token, Any]):
    def start(self, *items: Any) -> Any:
        return items[0] if items else MatchAll()

    def or_expr(self, *items: Any) -> Or:
        return Or(tuple(items))

    def and_expr(self, *items: Any) -> And:
        return And(tuple(items))

    value_or = or_expr
    value_and = and_expr

    def negation(self, item: Any) -> Not:
        return Not(item)

    def match_all(self) -> MatchAll:
        return MatchAll()

    def word(self, token: Token) -> _Unfielded:
        return _Unfielded(_unescape(str(token)))

    def phrase(self, token: Token) -> _Unfielded:
        return _Unfielded(_unescape(str(token)[1:-1]), phrase=True)

    def any_value(self) -> _Unfielded:
        return _Unfielded("*", any=True)

    def group(self, inner: Any) -> Any:
        return inner

    def open_bound(self) -> None:
        return None

    def range(self, lower: Token, low: Token | None, high: Token | None, upper: Token) -> _Bounds:
        return _Bounds(None if low is None else _unescape(str(low)), None if high is None else _unescape(str(high)),
                       str(lower) == "[", str(upper) == "]")

    def fielded(self, field: Token, value: Any) -> Node:
        return _with_field(str(field), value)


def _free(node: Any) -> Node:
    """Free-text values (outside any `field:`) become terms without a field."""
    if isinstance(node, _Unfielded):
        return Term(None, node.value, phrase=node.phrase)
    if isinstance(node, And):
        return And(tuple(_free(i) for i in node.items))
    if isinstance(node, Or):
        return Or(tuple(_free(i) for i in node.items))
    if isinstance(node, Not):
        return Not(_free(node.item))
    result: Node = node
    return result


_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


def parse(text: str) -> Node:
    """Parse a `q` or `fq` value; raises `QuerySyntaxError` for anything outside the syntax."""
    try:
        tree = _PARSER.parse(text)
        return _free(_ToTree().transform(tree))
    except VisitError as exc:
        raise QuerySyntaxError(str(exc.orig_exc)) from exc
    except LarkError as exc:
        raise QuerySyntaxError(str(exc).splitlines()[0]) from exc


def fields(node: Node) -> set[str]:
    """Every field a tree names (to refuse unknown ones before any SQL is built)."""
    if isinstance(node, Term | Range):
        return {node.field} if node.field else set()
    if isinstance(node, And | Or):
        return set().union(*(fields(i) for i in node.items))
    if isinstance(node, Not):
        return fields(node.item)
    return set()
