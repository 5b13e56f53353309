"""`POST /v1/collect` against real Kafka and PostgreSQL: site tokens, Origin binding, CORS, filters, limits,
rejections, and the `kp sitetoken` commands."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from kp.cli import app as kp_app
from kp.sitetokens import create_site_token
from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from tests.factories import OFFENBACH, WOHNSITZ_ANMELDUNG
from tests.ingest_keys import read_topic, running_ingest

SITE = "https://www.offenbach-test.example"
BROWSER = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0 Safari/537.36", "Content-Type": "text/plain;charset=UTF-8", "Origin": SITE}


def body(token: str, *hits: dict[str, Any]) -> bytes:
    return orjson.dumps({"token": token, "hits": list(hits)})


async def filtered(client: httpx.AsyncClient, reason: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "kp_ingest_tracker_filtered":
            return sum(s.value for s in family.samples
                       if s.name.endswith("_total") and s.labels.get("reason") == reason)
    return 0.0


@pytest.fixture
async def token(database_url: str) -> str:
    site = await create_site_token(database_url, OFFENBACH, WOHNSITZ_ANMELDUNG, [SITE], 1000.0, 1000, "test")
    return site.token


class TestCollect:
    async def test_page_view_from_its_origin_lands_in_kafka_with_cors(
        self, kafka_bootstrap: str, database_url: str, token: str, unique: str
    ) -> None:
        session = f"s{unique}"
        async with running_ingest(kafka_bootstrap, database_url) as client:
            resp = await client.post("/v1/collect", headers=BROWSER, content=body(token, {
                "kind": "pageview", "path": "/Rathaus/?q=geheim", "ref": "www.google.de", "width": 390,
                "session": session}, {"kind": "pageview", "path": "/buergerbuero", "ref": "l.facebook.com",
                                      "width": 390, "session": session}))
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"accepted_count": 2, "rejected_count": 0}
            assert resp.headers["access-control-allow-origin"] == SITE
        event, social = sorted(
            await read_topic(kafka_bootstrap, USAGE_EVENTS.name, lambda v: v.get("session") == session, 2),
            key=lambda e: e["data"]["page"], reverse=True)
        assert event["type"] == "usage.page.viewed"
        assert event["schema_version"] == 2
        assert event["data"] == {"page": "/rathaus", "device": "mobile", "referrer": "search"}
        assert social["data"] == {"page": "/buergerbuero", "device": "mobile", "referrer": "social"}
        assert (event["municipality"], event["service"], event["source"]) == (OFFENBACH, WOHNSITZ_ANMELDUNG,
                                                                               "web-tracker")

    async def test_forged_or_missing_origin_and_unknown_token_are_refused(
        self, kafka_bootstrap: str, database_url: str, token: str
    ) -> None:
        hit = {"kind": "pageview", "path": "/", "width": 1200}
        async with running_ingest(kafka_bootstrap, database_url) as client:
            for headers, code in (({**BROWSER, "Origin": "https://evil.example"}, "forbidden_origin"),
                                  ({k: v for k, v in BROWSER.items() if k != "Origin"}, "origin_required")):
                resp = await client.post("/v1/collect", headers=headers, content=body(token, hit))
                assert resp.status_code == 403
                assert resp.headers["content-type"] == "application/problem+json"
                assert resp.json()["code"] == code
                assert "access-control-allow-origin" not in resp.headers
            resp = await client.post("/v1/collect", headers=BROWSER, content=body("kps_made-up", hit))
            assert (resp.status_code, resp.json()["code"]) == (403, "unknown_site_token")
            assert await filtered(client, "forbidden_origin") == 1

    async def test_bots_and_do_not_track_are_counted_apart(
        self, kafka_bootstrap: str, database_url: str, token: str
    ) -> None:
        hit = {"kind": "pageview", "path": "/", "width": 1200}
        async with running_ingest(kafka_bootstrap, database_url) as client:
            for ua in ("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0", "Googlebot/2.1", ""):
                resp = await client.post("/v1/collect", headers={**BROWSER, "User-Agent": ua}, content=body(token, hit))
                assert resp.json() == {"accepted_count": 0, "rejected_count": 0, "filtered": "bot"}
            for header in ({"DNT": "1"}, {"Sec-GPC": "1"}):
                resp = await client.post("/v1/collect", headers={**BROWSER, **header}, content=body(token, hit))
                assert resp.json()["filtered"] == "do_not_track"
            assert await filtered(client, "bot") == 3
            assert await filtered(client, "do_not_track") == 2

    async def test_a_bad_hit_is_rejected_alone_and_the_comment_scrubbed(
        self, kafka_bootstrap: str, database_url: str, token: str, unique: str
    ) -> None:
        session = f"f{unique}"
        async with running_ingest(kafka_bootstrap, database_url) as client:
            resp = await client.post("/v1/collect", headers=BROWSER, content=body(
                token, {"kind": "feedback", "stars": 7, "session": session},
                {"kind": "feedback", "stars": 2, "comment": "Bitte an max@example.de", "session": session},
                {"kind": "pageview", "path": "/", "service": "00000000000000", "session": session}))
            assert resp.json() == {"accepted_count": 1, "rejected_count": 2}
        [feedback] = await read_topic(kafka_bootstrap, USAGE_EVENTS.name, lambda v: v.get("session") == session, 1)
        assert feedback["data"] == {"stars": 2, "comment": "Bitte an [email]"}
        rejected = await read_topic(kafka_bootstrap, USAGE_REJECTED.name,
                                    lambda v: session in (v.get("raw") or ""), 2)
        assert sorted(r["reason"] for r in rejected) == ["invalid_event", "mapping_failed"]
        assert {r["platform"] for r in rejected} == {"web-tracker"}

    async def test_limits_per_client_and_content_type(
        self, kafka_bootstrap: str, database_url: str, token: str
    ) -> None:
        hit = {"kind": "pageview", "path": "/", "width": 1200}
        async with running_ingest(kafka_bootstrap, database_url, tracker_client_rate_per_s=0.001,
                                  tracker_client_burst=2) as client:
            resp = await client.post("/v1/collect", headers={**BROWSER, "Content-Type": "application/xml"},
                                     content=body(token, hit))
            assert (resp.status_code, resp.json()["code"]) == (415, "unsupported_media_type")
            resp = await client.post("/v1/collect", headers=BROWSER, content=body(token, hit))
            assert resp.status_code == 200
            resp = await client.post("/v1/collect", headers=BROWSER, content=body(token, hit))
            assert (resp.status_code, resp.json()["code"]) == (429, "rate_limited")
            assert int(resp.headers["retry-after"]) >= 1

    async def test_scripts_are_served_small_and_cacheable(self, kafka_bootstrap: str, database_url: str) -> None:
        async with running_ingest(kafka_bootstrap, database_url) as client:
            for name in ("tracker.js", "feedback.js"):
                resp = await client.get(f"/{name}", headers={"Accept-Encoding": "gzip"})
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/javascript")
                assert int(resp.headers["content-length"]) <= 2048  # gzip as sent
                assert "max-age" in resp.headers["cache-control"]


class TestSiteTokenCommand:
    def test_create_list_revoke(self, kafka_bootstrap: str, database_url: str, unique: str) -> None:
        runner = CliRunner()
        env = {"KP_KAFKA_BOOTSTRAP": kafka_bootstrap, "KP_DATABASE_URL": database_url}
        out = runner.invoke(kp_app, ["sitetoken", "create", "--municipality", OFFENBACH, "--origin",
                                     "https://www.Example-Stadt.de", "--description", unique], env=env)
        assert out.exit_code == 0, out.output
        lines = dict(line.split(None, 1) for line in out.output.splitlines()[:3])
        assert lines["origins"] == "https://www.example-stadt.de"
        assert lines["token"].startswith("kps_")
        listed = runner.invoke(kp_app, ["sitetoken", "list"], env=env)
        assert lines["token"] in listed.output
        assert runner.invoke(kp_app, ["sitetoken", "revoke", lines["id"]], env=env).exit_code == 0
        assert lines["token"] not in runner.invoke(kp_app, ["sitetoken", "list"], env=env).output
        bad = runner.invoke(kp_app, ["sitetoken", "create", "-m", "99999999", "--origin", "https://x.de"], env=env)
        assert bad.exit_code == 2
        bad = runner.invoke(kp_app, ["sitetoken", "create", "-m", OFFENBACH, "--origin", "x.de/pfad"], env=env)
        assert bad.exit_code == 2
