"""Ingest logic with fakes: body decoding, checks, privacy scrub, keys, rate limit, the write to the sink."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.ingest import service
from services.ingest.service import ApiKey, Authenticator, Item, Policy, RateLimiter
from shared.http import ProblemError
from tests.factories import MARBURG, OFFENBACH, usage_event

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
POLICY = Policy(clock_skew=timedelta(minutes=5), late_horizon=timedelta(days=7))
KEY = ApiKey(id=uuid.uuid4(), platform="p", municipalities=frozenset({OFFENBACH}), rate_per_s=1.0, burst=2)


class FakeSink:
    def __init__(self) -> None:
        self.events: list[tuple[bytes, bytes]] = []
        self.rejected: list[tuple[bytes, bytes]] = []

    async def write(self, events: Sequence[tuple[bytes, bytes]], rejected: Sequence[tuple[bytes, bytes]]) -> None:
        self.events += events
        self.rejected += rejected


class FailingSink:
    async def write(self, events: Sequence[tuple[bytes, bytes]], rejected: Sequence[tuple[bytes, bytes]]) -> None:
        raise TimeoutError


class TestDecompress:
    def test_identity_passes_through(self) -> None:
        assert service.decompress(b"[]", None, 10) == b"[]"

    def test_gzip_is_inflated(self) -> None:
        assert service.decompress(gzip.compress(b"[1]"), "gzip", 10) == b"[1]"

    def test_inflating_beyond_limit_is_413(self) -> None:
        with pytest.raises(ProblemError) as err:
            service.decompress(gzip.compress(b" " * 1000), "gzip", 100)
        assert err.value.status == 413

    def test_truncated_gzip_is_400(self) -> None:
        with pytest.raises(ProblemError) as err:
            service.decompress(gzip.compress(b"[1, 2, 3]")[:-6], "gzip", 100)
        assert (err.value.status, err.value.extra["code"]) == (400, "invalid_gzip")

    def test_other_encoding_is_415(self) -> None:
        with pytest.raises(ProblemError) as err:
            service.decompress(b"", "deflate", 100)
        assert err.value.status == 415


class TestParseItems:
    def test_json_array(self) -> None:
        items = service.parse_items(b'[{"a": 1}, 2]', "application/json; charset=utf-8", 10)
        assert [(i.index, i.envelope) for i in items] == [(0, {"a": 1}), (1, 2)]

    def test_ndjson_skips_blank_lines_and_keeps_bad_line_as_failure(self) -> None:
        items = service.parse_items(b'{"a": 1}\n\nnope\n', "application/x-ndjson", 10)
        assert items[0].failure is None
        assert items[1].failure is not None
        assert items[1].failure[0] == "invalid_json"

    def test_count_limit(self) -> None:
        with pytest.raises(ProblemError) as err:
            service.parse_items(b"[1, 2, 3]", "application/json", 2)
        assert err.value.status == 413

    def test_missing_content_type_is_415(self) -> None:
        with pytest.raises(ProblemError) as err:
            service.parse_items(b"[]", None, 2)
        assert err.value.status == 415


class TestCheckItem:
    def check(self, event: object) -> object:
        return service.check_item(Item(0, event, event), KEY, POLICY, NOW)

    def test_valid_event_passes(self) -> None:
        outcome = self.check(usage_event(time=NOW))
        assert not isinstance(outcome, service.Rejected)

    @pytest.mark.parametrize(("event", "reason"), [
        (usage_event(time=NOW, municipality="1"), "invalid_event"),
        (usage_event(time=NOW, municipality=MARBURG), "forbidden_municipality"),
        (usage_event(time=NOW + timedelta(minutes=6)), "from_future"),
        (usage_event(time=NOW - timedelta(days=8)), "too_late"),
    ])
    def test_each_reason(self, event: object, reason: str) -> None:
        outcome = self.check(event)
        assert isinstance(outcome, service.Rejected)
        assert outcome.reason == reason

    def test_within_skew_and_horizon_passes(self) -> None:
        for t in (NOW + timedelta(minutes=4), NOW - timedelta(days=6, hours=23)):
            assert not isinstance(self.check(usage_event(time=t)), service.Rejected)

    def test_unrestricted_key_allows_any_municipality(self) -> None:
        outcome = service.check_item(Item(0, {}, usage_event(time=NOW, municipality=MARBURG)), service.ANONYMOUS,
                                     POLICY, NOW)
        assert not isinstance(outcome, service.Rejected)


class TestScrub:
    @pytest.mark.parametrize(("text", "expected"), [
        ("mail an a.b@stadt-offenbach.de bitte", "mail an [email] bitte"),
        ("schreiben Sie an info (at) example.org", "schreiben Sie an [email]"),
        ("Tel. +49 69 8065-0", "Tel. [phone]"),
        ("ruf an 0170/1234567!", "ruf an [phone]!"),
        ("Schritt 3 von 5 war schwer, 2 Minuten", "Schritt 3 von 5 war schwer, 2 Minuten"),
        ("Gebühr 28,80 EUR am 24.11.2026", "Gebühr 28,80 EUR am 24.11.2026"),
    ])
    def test_removes_contact_data_and_keeps_the_rest(self, text: str, expected: str) -> None:
        assert service.scrub(text) == expected

    def test_stays_within_contract_length(self) -> None:
        assert len(service.scrub("a@b.de " * 100)) <= 500


class TestAuthenticator:
    async def test_known_key_is_cached_for_the_ttl(self) -> None:
        calls: list[str] = []
        plain = "kpk_secret"

        async def lookup(digest: str) -> ApiKey | None:
            calls.append(digest)
            return KEY if digest == service.hash_key(plain) else None

        clock = [0.0]
        auth = Authenticator(lookup, ttl_s=10, required=True, clock=lambda: clock[0])
        assert await auth.authenticate(f"Bearer {plain}") is KEY
        assert await auth.authenticate(f"bearer {plain}") is KEY
        assert len(calls) == 1
        clock[0] = 11
        await auth.authenticate(f"Bearer {plain}")
        assert len(calls) == 2

    @pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer unknown"])
    async def test_missing_or_wrong_key_is_401(self, header: str | None) -> None:
        async def lookup(_digest: str) -> ApiKey | None:
            return None

        with pytest.raises(ProblemError) as err:
            await Authenticator(lookup, 10, required=True).authenticate(header)
        assert err.value.status == 401

    async def test_without_requirement_no_header_is_anonymous(self) -> None:
        async def lookup(_digest: str) -> ApiKey | None:
            return None

        assert await Authenticator(lookup, 10, required=False).authenticate(None) is service.ANONYMOUS


class TestNewApiKey:
    def test_plain_key_is_random_and_only_hash_is_returned_for_storage(self) -> None:
        plain, key, digest = service.new_api_key("civento", [OFFENBACH], 5, 10)
        other, _, _ = service.new_api_key("civento", [OFFENBACH], 5, 10)
        assert plain != other
        assert plain.startswith("kpk_")
        assert len(plain) >= 40
        assert digest == service.hash_key(plain)
        assert plain not in digest
        assert key.key_prefix == plain[:12]

    @pytest.mark.parametrize(("platform", "municipalities"), [("Bad Name", [OFFENBACH]), ("ok", ["123"]), ("ok", [])])
    def test_invalid_input_is_refused(self, platform: str, municipalities: list[str]) -> None:
        with pytest.raises(ValueError, match="must"):
            service.new_api_key(platform, municipalities, 5, 10)


class TestRateLimiter:
    def test_burst_then_refill_at_rate(self) -> None:
        clock = [0.0]
        limiter = RateLimiter(clock=lambda: clock[0])
        assert limiter.acquire(KEY) is None
        assert limiter.acquire(KEY) is None
        wait = limiter.acquire(KEY)
        assert wait == pytest.approx(1.0)
        clock[0] = 1.0
        assert limiter.acquire(KEY) is None

    def test_keys_have_separate_buckets(self) -> None:
        limiter = RateLimiter(clock=lambda: 0.0)
        other = ApiKey(id=uuid.uuid4(), platform="q", municipalities=None, rate_per_s=1.0, burst=1)
        limiter.acquire(KEY)
        limiter.acquire(KEY)
        assert limiter.acquire(KEY) is not None
        assert limiter.acquire(other) is None

    def test_refusal_is_429_with_retry_after(self) -> None:
        limiter = RateLimiter(clock=lambda: 0.0)
        limiter.check(KEY)
        limiter.check(KEY)
        with pytest.raises(ProblemError) as err:
            limiter.check(KEY)
        assert err.value.status == 429
        assert err.value.headers["Retry-After"] == "1"


class TestIngest:
    async def test_accepted_and_rejected_are_written_together(self) -> None:
        sink = FakeSink()
        good, bad = usage_event(time=NOW), usage_event(time=NOW, municipality=MARBURG)
        items = [Item(0, good, good), Item(1, bad, bad)]
        result = await service.ingest(items, KEY, sink, POLICY, now=NOW)
        assert result.accepted == [good["id"]]
        assert [(r.index, r.reason) for r in result.rejected] == [(1, "forbidden_municipality")]
        assert [orjson.loads(v)["id"] for _, v in sink.events] == [good["id"]]
        assert [orjson.loads(v)["event_id"] for _, v in sink.rejected] == [bad["id"]]
        assert sink.events[0][0] == f"{OFFENBACH}:{good['service']}".encode()

    async def test_sink_failure_propagates_and_nothing_is_reported_accepted(self) -> None:
        event = usage_event(time=NOW)
        with pytest.raises(TimeoutError):
            await service.ingest([Item(0, event, event)], KEY, FailingSink(), POLICY, now=NOW)

    async def test_empty_batch_writes_nothing(self) -> None:
        sink = FakeSink()
        result = await service.ingest([], KEY, sink, POLICY, now=NOW)
        assert (result.accepted, sink.events, sink.rejected) == ([], [], [])


class TestFastPath:
    def test_all_valid_batch_is_validated_in_one_pass(self) -> None:
        batch = [usage_event(time=NOW), usage_event("usage.step.completed", time=NOW)]
        items = service.parse_items(orjson.dumps(batch), "application/json", 10)
        assert all(isinstance(i.envelope, service.UsageEventBase) for i in items)
        assert [i.payload for i in items] == batch  # the body is parsed only when a payload is needed

    def test_one_invalid_event_falls_back_to_item_by_item(self) -> None:
        batch = [usage_event(time=NOW), {"id": "x"}]
        items = service.parse_items(orjson.dumps(batch), "application/json", 10)
        assert [i.envelope for i in items] == batch

    async def test_fast_path_rejection_keeps_the_payload_as_sent(self) -> None:
        sink = FakeSink()
        batch = [usage_event(time=NOW, municipality=MARBURG)]
        items = service.parse_items(orjson.dumps(batch), "application/json", 10)
        result = await service.ingest(items, KEY, sink, POLICY, now=NOW)
        assert result.rejected[0].id == batch[0]["id"]
        assert orjson.loads(orjson.loads(sink.rejected[0][1])["raw"]) == batch[0]

    def test_count_limit_applies_on_the_fast_path(self) -> None:
        with pytest.raises(ProblemError) as err:
            service.parse_items(orjson.dumps([usage_event(time=NOW)] * 3), "application/json", 2)
        assert err.value.status == 413


class TestSettings:
    def test_keys_cannot_be_switched_off_in_production(self) -> None:
        from services.ingest.settings import IngestSettings

        with pytest.raises(ValueError, match="KP_INGEST_AUTH_REQUIRED"):
            IngestSettings(environment="production", database_url="postgresql://u@db/kp", ingest_auth_required=False)
        assert IngestSettings().ingest_auth_required is True
