"""Tracker logic without I/O: classes, path normalisation, filters, limits, hits mapped onto valid events,
and the scripts' size and content rules."""

from __future__ import annotations

import gzip
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.ingest.tracker.service import (
    ClientLimiter,
    Site,
    SiteToken,
    SiteTokens,
    check_origin,
    device_class,
    hits_to_items,
    is_bot,
    new_site_token,
    normalise_origin,
    normalise_path,
    parse_body,
    referrer_class,
    refuses_tracking,
)
from shared.events import usage_event_adapter
from shared.http import ProblemError
from tests.factories import OFFENBACH, WOHNSITZ_ANMELDUNG

STATIC = Path(__file__).resolve().parents[2] / "services" / "ingest" / "tracker" / "static"
SITE_HOST = "www.offenbach.de"
MEMBERS = frozenset({"www.marburg.de"})


def _token(**kw: object) -> SiteToken:
    return new_site_token(OFFENBACH, WOHNSITZ_ANMELDUNG, [f"https://{SITE_HOST}"], **kw)  # type: ignore[arg-type]


class TestReferrerClass:
    @pytest.mark.parametrize(("host", "expected"), [
        ("", "direct"), (SITE_HOST, "internal"), ("www.marburg.de", "municipal"), ("verwaltung.hessen.de", "municipal"),
        ("www.google.de", "search"), ("duckduckgo.com", "search"), ("www.ecosia.org", "search"),
        ("l.facebook.com", "social"), ("t.co", "social"), ("www.linkedin.com", "social"),
        ("www.zeitung-beispiel.de", "other"), ("notgoogle.example", "other"), ("xt.com", "other"),
    ])
    def test_host_reduced_to_class(self, host: str, expected: str) -> None:
        assert referrer_class(host, SITE_HOST, MEMBERS) == expected


class TestDeviceClass:
    @pytest.mark.parametrize(("width", "expected"), [(0, "other"), (390, "mobile"), (767, "mobile"),
                                                     (768, "tablet"), (1023, "tablet"), (1024, "desktop")])
    def test_viewport_width(self, width: int, expected: str) -> None:
        assert device_class(width) == expected


class TestNormalisePath:
    @pytest.mark.parametrize(("raw", "expected"), [
        ("/", "/"), ("/Buergerservice/", "/buergerservice"), ("/a//b?x=1#top", "/a/b"),
        ("/antrag/1234567/status", "/antrag/:id/status"),
        ("/fall/0b7f6c1e-3f57-4d7e-9d1c-6b0f2f3f8a10", "/fall/:id"),
        ("/kontakt/max.muster%40example.de", "/kontakt/:id"),
        ("/suche;lang=de", "/suche;lang=de"), ("/suche;q=12345678", "/suche"),
        ("/stra%C3%9Fe", "/straße"), ("/a%20b", "/ab"),
    ])
    def test_published_form(self, raw: str, expected: str) -> None:
        assert normalise_path(raw) == expected

    def test_long_paths_are_cut_to_the_contract(self) -> None:
        out = normalise_path("/" + "x" * 500)
        assert len(out) == 200
        usage_event_adapter.validate_python({
            "id": str(uuid.uuid4()), "type": "usage.page.viewed", "schema_version": 2, "source": "web-tracker",
            "time": datetime.now(UTC).isoformat(), "municipality": OFFENBACH, "service": WOHNSITZ_ANMELDUNG,
            "session": "abcdefgh", "data": {"page": out, "device": "mobile", "referrer": "direct"}})


class TestFilters:
    @pytest.mark.parametrize("ua", [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
        "curl/8.5.0", "python-requests/2.31", "facebookexternalhit/1.1",
    ])
    def test_bots_and_headless_browsers(self, ua: str) -> None:
        assert is_bot(ua)

    @pytest.mark.parametrize("ua", [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Version/17.1 Mobile Safari/604.1",
    ])
    def test_browsers_pass(self, ua: str) -> None:
        assert not is_bot(ua)

    def test_dnt_and_gpc(self) -> None:
        assert refuses_tracking("1", None)
        assert refuses_tracking(None, "1")
        assert not refuses_tracking("0", None)
        assert not refuses_tracking(None, None)


class TestOrigins:
    def test_normalised_and_checked(self) -> None:
        token = _token()
        assert check_origin(token, "https://WWW.offenbach.de") == f"https://{SITE_HOST}"
        for forged, code in (("https://evil.example", "forbidden_origin"), (None, "origin_required"),
                             ("null", "forbidden_origin"), (f"http://{SITE_HOST}", "forbidden_origin")):
            with pytest.raises(ProblemError) as exc:
                check_origin(token, forged)
            assert (exc.value.status, exc.value.extra["code"]) == (403, code)

    @pytest.mark.parametrize("bad", ["www.x.de", "https://x.de/pfad", "ftp://x.de", "https://x.de?a=1"])
    def test_only_scheme_host_port(self, bad: str) -> None:
        with pytest.raises(ValueError, match="origin"):
            normalise_origin(bad)


class TestLimits:
    def test_client_bucket(self) -> None:
        now = [0.0]
        limiter = ClientLimiter(rate_per_s=1.0, burst=3, clock=lambda: now[0])
        for _ in range(3):
            limiter.check("a")
        with pytest.raises(ProblemError) as exc:
            limiter.check("a")
        assert exc.value.status == 429
        assert exc.value.headers["Retry-After"] == "1"
        limiter.check("b")  # another client has its own bucket
        now[0] = 1.0
        limiter.check("a")

    async def test_unknown_tokens_are_cached_too(self) -> None:
        asked: list[str] = []
        token = _token()

        async def lookup(value: str) -> SiteToken | None:
            asked.append(value)
            return token if value == token.token else None

        tokens = SiteTokens(lookup, ttl_s=60, clock=lambda: 0.0)
        for _ in range(3):
            with pytest.raises(ProblemError, match="unknown"):
                await tokens.resolve("kps_made-up")
            assert await tokens.resolve(token.token) == token
        assert asked == ["kps_made-up", token.token]


class TestHits:
    def test_each_kind_becomes_a_valid_event(self) -> None:
        token = _token()
        site = Site(token, f"https://{SITE_HOST}", MEMBERS)
        hits = [
            {"kind": "pageview", "path": "/rathaus?utm=x", "ref": "www.google.de", "width": 390,
             "session": "abcdefgh12"},
            {"kind": "pageview", "path": "/rathaus/b", "ref": SITE_HOST, "width": 1280},
            {"kind": "download", "path": "/dokumente/Satzung.pdf", "width": 800},
            {"kind": "outbound", "host": "www.hessen.de", "width": 800},
            {"kind": "form_start", "width": 390, "service": "99050012104000"},
            {"kind": "form_step", "step": 2, "name": "adresse"},
            {"kind": "form_submit", "duration": 95},
            {"kind": "form_abandon", "step": 1},
            {"kind": "feedback", "stars": 4, "comment": "Gut, Rückruf unter 0171 2345678"},
        ]
        refs: list[str] = []
        items = hits_to_items(hits, site, datetime.now(UTC), refs.append)
        events = [usage_event_adapter.validate_python(i.envelope) for i in items]
        assert [e.type for e in events] == [
            "usage.page.viewed", "usage.page.viewed", "usage.page.viewed", "usage.page.viewed",
            "usage.session.started", "usage.step.completed", "usage.session.submitted", "usage.session.abandoned",
            "usage.feedback.given"]
        assert refs == ["search", "internal"]
        dumped = [usage_event_adapter.dump_python(e, mode="json") for e in events]
        assert dumped[0]["data"] == {"page": "/rathaus", "device": "mobile", "referrer": "search"}
        assert dumped[0]["session"] == "abcdefgh12"
        assert dumped[1]["data"] == {"page": "/rathaus/b", "device": "desktop", "referrer": "internal"}
        assert dumped[2]["data"]["page"] == "/dokumente/satzung.pdf"
        assert dumped[2]["data"]["referrer"] == "internal"
        assert dumped[3]["data"]["page"] == "/_outbound/www.hessen.de"
        assert dumped[3]["data"]["referrer"] == "internal"
        assert [d["schema_version"] for d in dumped] == [2, 2, 2, 2, 1, 1, 1, 1, 1]
        assert dumped[4]["service"] == "99050012104000"
        assert dumped[5]["service"] == WOHNSITZ_ANMELDUNG
        assert {d["municipality"] for d in dumped} == {OFFENBACH}
        assert len({d["id"] for d in dumped}) == len(dumped)
        assert dumped[8]["source"] == "web-feedback"

    def test_a_bad_hit_fails_alone(self) -> None:
        site = Site(_token(), f"https://{SITE_HOST}", MEMBERS)
        items = hits_to_items([{"kind": "pageview"}, {"kind": "feedback", "stars": 9}, {"kind": "form_start"},
                               {"kind": "nope"}, "x"], site, datetime.now(UTC))
        assert [i.failure[0] if i.failure else None for i in items] == [
            "mapping_failed", "mapping_failed", None, "mapping_failed", "mapping_failed"]

    @pytest.mark.parametrize(("body", "code"), [
        (b"nope", "invalid_json"), (b"[]", "not_a_collect_request"), (b'{"token": 1, "hits": []}',
                                                                      "not_a_collect_request"),
        (b'{"token": "t", "hits": [], "ip": "1.2.3.4"}', "not_a_collect_request"),
        (b'{"token": "t", "hits": [' + b",".join([b"{}"] * 21) + b"]}", "payload_too_large"),
    ])
    def test_request_level_errors(self, body: bytes, code: str) -> None:
        with pytest.raises(ProblemError) as exc:
            parse_body(body)
        assert exc.value.extra["code"] == code


class TestScripts:
    @pytest.mark.parametrize("name", ["tracker.js", "feedback.js"])
    def test_small_and_without_eval_or_storage(self, name: str) -> None:
        text = (STATIC / name).read_text()
        assert len(gzip.compress(text.encode(), 9)) <= 2048
        for forbidden in (r"\beval\b", r"new Function", r"document\.cookie", r"localStorage", r"sessionStorage",
                          r"indexedDB", r"setTimeout\(\s*[\"']", r"innerHTML", r"\.style\b", r"canvas",
                          r"userAgent", r"screen\."):
            assert not re.search(forbidden, text), (name, forbidden)
