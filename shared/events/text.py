"""The one string rule of every contract: no control characters, no unpaired surrogates, bounded twice.

Every free-text field of an event, of a portal dataset and of a workflow request is
`Annotated[str, Text(...)]`: it refuses C0 controls (U+0000-U+001F, except TAB, LF and CR in fields documented
as multi-line), DEL and the C1 controls (U+007F-U+009F), unpaired surrogates and the noncharacters
U+FFFE/U+FFFF (which XML cannot carry), and is bounded in characters and in UTF-8 bytes. PostgreSQL refuses NUL
in text, XML refuses most C0 controls, and a string bounded only in characters can still be four times as long
in bytes; the rule keeps all three out at the first boundary instead of letting one record fail a batch later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_MULTI_LINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def refused_character(value: str, *, multiline: bool = False) -> tuple[int, str] | None:
    """Index and character of the first character the rule refuses, or None."""
    found = (_MULTI_LINE if multiline else _SINGLE_LINE).search(value)
    return (found.start(), found.group()) if found else None


@dataclass(frozen=True, slots=True)
class TextRule:
    """The validator around the string schema: refused characters, then the byte bound."""

    max_bytes: int
    multiline: bool = False

    def check_characters(self, value: str) -> None:
        bad = refused_character(value, multiline=self.multiline)
        if bad is not None:
            index, char = bad
            kind = ("unpaired surrogate" if "\ud800" <= char <= "\udfff"
                    else "noncharacter" if char in "\ufffe\uffff" else "control character")
            raise PydanticCustomError(
                "string_forbidden_character",
                "{kind} U+{code} at index {index} is not allowed",
                {"kind": kind, "code": f"{ord(char):04X}", "index": index},
            )

    def check_bytes(self, value: str) -> None:
        # Each character takes at most 4 bytes: most values never need to be encoded to be checked.
        if len(value) * 4 > self.max_bytes and len(value.encode()) > self.max_bytes:
            raise PydanticCustomError(
                "string_too_many_bytes", "string has more than {max_bytes} UTF-8 bytes", {"max_bytes": self.max_bytes}
            )

    def __call__(self, value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        """Refused characters first (clearer than a pattern mismatch), then length and pattern, then bytes."""
        if isinstance(value, str):
            self.check_characters(value)
        checked = handler(value)
        self.check_bytes(checked)
        return checked


@dataclass(frozen=True, slots=True)
class Text:
    """Annotation of a contract string: `Annotated[str, Text(120)]`, at most `max_chars` characters and
    `max_bytes` UTF-8 bytes (default twice the characters), refusing what `TextRule` refuses."""

    max_chars: int
    max_bytes: int | None = None
    min_chars: int = 0
    multiline: bool = False
    pattern: str | None = None
    strip: bool = False
    strict: bool = True

    def __get_pydantic_core_schema__(self, _source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
        inner = core_schema.str_schema(
            max_length=self.max_chars, min_length=self.min_chars or None, pattern=self.pattern,
            strip_whitespace=self.strip or None, strict=self.strict,
        )
        rule = TextRule(self.max_bytes if self.max_bytes is not None else 2 * self.max_chars, self.multiline)
        return core_schema.no_info_wrap_validator_function(rule, inner)
