"""API docs of every service: Swagger UI from the service's own assets, nothing from another host."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.aggregator.app import create_app as aggregator_app
from services.ingest.app import create_app as ingest_app
from services.publisher.app import create_app as publisher_app
from services.workflow.app import create_app as workflow_app
from shared.apidocs import ASSET_FILES, STATIC

ROOT = Path(__file__).resolve().parents[2]
APPS: dict[str, Callable[[], FastAPI]] = {"ingest": ingest_app, "aggregator": aggregator_app,
                                          "publisher": publisher_app, "workflow": workflow_app}


class TestDocsPage:
    @pytest.mark.parametrize("name", sorted(APPS))
    def test_every_url_of_the_page_is_served_by_the_service_itself(self, name: str) -> None:
        client = TestClient(APPS[name]())  # no context manager: the lifespan (Kafka, PostgreSQL) is not needed
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert urls, page.text
        assert [u for u in urls if "//" in u] == []
        for url in urls:
            assert client.get(url).status_code == 200, url
        assert '"validatorUrl": null' in page.text
        assert client.get("/redoc").status_code == 404  # ReDoc would load its script and fonts from CDNs


def test_vendored_swagger_ui_matches_npm_package() -> None:
    installed = ROOT / "node_modules" / "swagger-ui-dist"
    if not installed.exists():  # pragma: no cover - npm packages are installed by `make setup`
        pytest.skip("node_modules/swagger-ui-dist missing: run `npm ci`")
    for name in ASSET_FILES:
        assert (STATIC / name).read_bytes() == (installed / name).read_bytes(), f"copy {name} from the npm package"
    assert "Apache License" in (STATIC / "LICENSE").read_text()
