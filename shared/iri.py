"""IRIs by the grammar of RFC 3987 (rfc3987-syntax), for everything the catalog writes as an RDF resource."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from rfc3987_syntax import is_valid_syntax_iri


@lru_cache(maxsize=65_536)
def is_iri(value: str) -> bool:
    """True for an absolute IRI (RFC 3987 `IRI`: scheme, hierarchical part, optional query and fragment).

    Cached: the catalog checks every stored URL on each build, and the grammar parser takes tens of µs."""
    try:
        return bool(is_valid_syntax_iri(value))
    except Exception:  # the parser refuses some inputs with its own exceptions; all mean "not an IRI"
        return False


def is_http_iri(value: str) -> bool:
    """An absolute http(s) IRI with a host."""
    if not value.lower().startswith(("http://", "https://")) or not is_iri(value):
        return False
    try:
        return bool(urlsplit(value).hostname)
    except ValueError:
        return False


def http_iri(value: str) -> str:
    """Validator: `value` unchanged if it is an absolute http(s) IRI, else ValueError naming the rule."""
    if not is_http_iri(value):
        raise ValueError("not an absolute http(s) IRI (RFC 3987); characters such as <>\"{}|\\^` and spaces must "
                         "be percent-encoded")
    return value
