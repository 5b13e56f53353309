"""Dashboard pages over HTTP against the real PostgreSQL: defaults, downloads, bad input."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import AsyncIterator
from datetime import date

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from services.publisher.app import create_app
from services.publisher.settings import PublisherSettings
from shared import ckm

FULDA = "06631009"
DAY = date(2019, 6, 2)
RANGE = {"from": "2019-06-01", "to": "2019-06-03"}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(PublisherSettings(database_url=database_url))
    async with LifespanManager(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


@pytest.fixture
async def services(db: asyncpg.Connection, unique: str) -> tuple[str, str]:
    """Two services of Fulda on one day; the second has more sessions started."""
    quiet, busy = ("97" + str(int(unique, 16) % 10**12 + i).zfill(12) for i in (0, 1))
    rows = []
    for svc, started in ((quiet, 7), (busy, 300)):
        rows += [(svc, "sessions_started", "", started), (svc, "channel", "web", started),
                 (svc, "device", "mobile", started)]
    rows += [(busy, "payment", "paypal", 40), (busy, "payment", "kreditkarte", 17)]
    # key sums at which the table leaves each count as it is, so the page shows the counts written here
    await db.executemany(
        """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value,
                                   key_sum)
           VALUES ('day', $1::date::timestamp AT TIME ZONE 'Europe/Berlin', $2, $3, $4, $5, $6, $7)""",
        [(DAY, FULDA, svc, m, d, v, unchanged_key(v)) for svc, m, d, v in rows],
    )
    return quiet, busy


def unchanged_key(count: int) -> int:
    """A cell key at which the perturbation table maps `count` to itself."""
    row = ckm.table().rows[min(count, ckm.table().n_max)]
    n = row.deviations.index(0)
    key = row.thresholds[n - 1] if n else 0
    assert ckm.perturb(count, key) == count
    return key


def _downloads(page: str) -> dict[str, str]:
    """Section id -> download URL of its chart."""
    out = {}
    for section in re.findall(r'<section class="chart" id="([^"]+)".*?</section>', page, flags=re.S):
        block = page[page.index(f'id="{section}"'):]
        href = re.search(r'<a href="([^"]+)" download>', block)
        assert href, section
        out[section] = html.unescape(href.group(1))
    return out


class TestMunicipalityPage:
    async def test_default_service_is_the_busiest_and_page_is_german(
        self, client: httpx.AsyncClient, services: tuple[str, str]
    ) -> None:
        resp = await client.get(f"/dashboard/{FULDA}", params=RANGE)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        assert '<html lang="de">' in resp.text
        assert f'<option value="{services[1]}" selected>' in resp.text

    async def test_every_download_link_serves_the_numbers_of_its_chart(
        self, client: httpx.AsyncClient, services: tuple[str, str]
    ) -> None:
        resp = await client.get(f"/dashboard/{FULDA}", params={**RANGE, "service": services[1]})
        links = _downloads(resp.text)
        assert set(links) >= {"nutzung", "trichter", "zahlarten", "anmeldung", "zufriedenheit",
                              "ausfuelldauer", "bearbeitungsdauer", "vergleich"}
        for section, url in links.items():
            r = await client.get(url)
            assert r.status_code == 200, (section, url, r.text)
        payments = await client.get(links["zahlarten"])
        assert payments.headers["content-type"].startswith("text/csv")
        rows = [r for r in csv.DictReader(io.StringIO(payments.text)) if r["metric"] == "payment"]
        assert {r["dimension"]: r["value"] for r in rows} == {"kreditkarte": "17", "paypal": "40"}
        table = re.search(r'<table data-table="zahlarten">.*?</table>', resp.text, flags=re.S)
        assert table
        assert re.findall(r'data-value="([^"]+)"', table.group(0)) == ["17", "40"]

    async def test_unknown_municipality_is_a_german_404_page(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/dashboard/99999999")
        assert resp.status_code == 404
        assert "Seite nicht gefunden" in resp.text

    @pytest.mark.parametrize(("params", "name"), [
        ({"period": "week"}, "period"), ({"from": "2020-13-01"}, "from"), ({"service": "12"}, "service"),
        ({"from": "2020-02-01", "to": "2020-01-01"}, "from"), ({"to": "0001-01-01"}, "to"),
        ({"from": "1999-12-31"}, "from"), ({"from": "2020-01-01", "to": "2025-01-01"}, "from"),
    ])
    async def test_bad_filter_is_a_problem_naming_the_parameter(
        self, client: httpx.AsyncClient, params: dict[str, str], name: str
    ) -> None:
        resp = await client.get(f"/dashboard/{FULDA}", params=params)
        assert resp.status_code in (400, 422)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert name in resp.text


class TestHessenPage:
    async def test_overview_names_every_member_city(
        self, client: httpx.AsyncClient, services: tuple[str, str]
    ) -> None:
        resp = await client.get("/dashboard", params={**RANGE, "service": services[0]})
        assert resp.status_code == 200
        for name in ("Offenbach am Main", "Marburg", "Gießen", "Limburg a. d. Lahn", "Fulda", "Wetzlar"):
            assert f"<th scope=\"row\">{html.escape(name)}</th>" in resp.text
        table = re.search(r'<table data-table="nutzung-kommunen">.*?</table>', resp.text, flags=re.S)
        assert table
        fulda = re.search(r'<th scope="row">Fulda</th>\s*<td[^>]*data-value="([^"]+)"', table.group(0))
        assert fulda
        assert fulda.group(1) == "7"
