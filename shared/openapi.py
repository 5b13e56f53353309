"""OpenAPI document fixes shared by every service: one operationId per operation, as the specification demands."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def unique_operation_ids(schema: dict[str, Any]) -> dict[str, Any]:
    """Give each operation of a multi-method route its own id (`..._get`, `..._head`); returns the schema.

    FastAPI derives one id per route, so a route declared for GET and HEAD (or GET and POST) repeats it, which
    makes the document invalid and breaks client generators.
    """
    operations = [(op, method) for item in schema.get("paths", {}).values()
                  for method, op in item.items() if method in HTTP_METHODS and isinstance(op, dict)]
    seen = Counter(op.get("operationId") for op, _ in operations)
    for op, method in operations:
        op_id = op.get("operationId")
        if op_id is None or seen[op_id] < 2:
            continue
        stem = next((op_id[: -len(m) - 1] for m in HTTP_METHODS if op_id.endswith("_" + m)), op_id)
        op["operationId"] = f"{stem}_{method}"
    return schema


def install_unique_operation_ids(app: FastAPI) -> None:
    """Wrap the app's OpenAPI generator (call after any other override of `app.openapi`)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    done: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        if "schema" not in done:
            with warnings.catch_warnings():
                # FastAPI warns about exactly the repeats fixed here
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                done["schema"] = unique_operation_ids(generate())
        return done["schema"]

    app.openapi = openapi  # type: ignore[method-assign]
