"""Tracker logic: site tokens, origin check, bot filter, rate limits, and hits mapped onto usage events.

A hit becomes an ordinary usage event (id made here with uuid4, time = arrival) and then takes the same path
as every platform's event: contract validation, privacy scrub, the accepted or the rejected topic.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote

import orjson
from pydantic import TypeAdapter, ValidationError

from services.ingest.service import ApiKey, Item, pydantic_reasons, refusal
from services.ingest.tracker.schemas import (
    DownloadHit,
    FeedbackHit,
    FormAbandonHit,
    FormStartHit,
    FormStepHit,
    FormSubmitHit,
    Hit,
    OutboundHit,
    PageviewHit,
)
from shared.events.upcast import CURRENT_VERSIONS

TOKEN_PREFIX = "kps_"
TRACKER_SOURCE = "web-tracker"
FEEDBACK_SOURCE = "web-feedback"
MAX_HITS = 20

# ------------------------------------------------------------------------------------------------ site tokens

_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:\d{1,5})?$")
_AGS = re.compile(r"^\d{8}$")
_LEIKA = re.compile(r"^\d{14}$")


@dataclass(frozen=True, slots=True)
class SiteToken:
    """A public token of one municipal web site: bound to its origins, one municipality and a default service."""

    id: uuid.UUID
    token: str
    municipality: str
    service: str
    origins: frozenset[str]
    rate_per_s: float
    burst: int
    description: str = ""
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def caller(self) -> ApiKey:
        """The site as an ingest caller: scoped to its one municipality, limited by its own bucket."""
        return ApiKey(id=self.id, platform=TRACKER_SOURCE, municipalities=frozenset({self.municipality}),
                      rate_per_s=self.rate_per_s, burst=self.burst)


def normalise_origin(origin: str) -> str:
    """`https://www.Example-Stadt.de/` -> `https://www.example-stadt.de`; refuses paths, queries, other schemes."""
    value = origin.strip().rstrip("/").lower()
    if not _ORIGIN.match(value):
        raise ValueError(f"origin {origin!r} must be scheme://host[:port] with http or https, nothing after it")
    return value


def new_site_token(municipality: str, service: str, origins: Sequence[str], rate_per_s: float = 50.0,
                   burst: int = 200, description: str = "") -> SiteToken:
    """A fresh public token (`kps_` + 22 random characters)."""
    if not _AGS.match(municipality):
        raise ValueError(f"municipality {municipality!r} must be an 8-digit AGS")
    if not _LEIKA.match(service):
        raise ValueError(f"service {service!r} must be a 14-digit LeiKa key")
    if not origins:
        raise ValueError("at least one origin is required")
    if rate_per_s <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    return SiteToken(id=uuid.uuid4(), token=TOKEN_PREFIX + secrets.token_urlsafe(16), municipality=municipality,
                     service=service, origins=frozenset(normalise_origin(o) for o in origins),
                     rate_per_s=rate_per_s, burst=burst, description=description)


TokenLookup = Callable[[str], Awaitable[SiteToken | None]]


class SiteTokens:
    """Resolves public tokens, caching found and unknown ones for `ttl_s` (the endpoint is public: a flood of
    made-up tokens must not reach PostgreSQL once per request)."""

    def __init__(self, lookup: TokenLookup, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, SiteToken | None]] = {}

    async def resolve(self, token: str) -> SiteToken:
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] < self._ttl_s:
            found = cached[1]
        else:
            found = await self._lookup(token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now, found)
        if found is None:
            raise refusal(403, "unknown_site_token", "the site token is unknown or revoked")
        return found


def check_origin(token: SiteToken, origin: str | None) -> str:
    """The request's `Origin` must be one the token is bound to; returns it for the CORS answer."""
    if not origin:
        raise refusal(403, "origin_required", "requests must carry an Origin header (browsers send it)")
    try:
        value = normalise_origin(origin)
    except ValueError:
        value = ""
    if value not in token.origins:
        raise refusal(403, "forbidden_origin", f"the site token is not bound to origin {origin[:100]!r}")
    return value


# ------------------------------------------------------------------------------------------------ filters

_BOT = re.compile(
    r"bot|crawl|spider|slurp|scrap|headless|phantomjs|selenium|puppeteer|playwright|lighthouse|pagespeed|"
    r"prerender|preview|monitor|uptime|curl|wget|python-|httpx|aiohttp|java/|go-http|okhttp|libwww|feedfetcher|"
    r"facebookexternalhit|embedly|^$", re.IGNORECASE)


def is_bot(user_agent: str | None) -> bool:
    """Crawlers, link previews, monitors, scripts and headless browsers by their User-Agent (also none)."""
    return bool(_BOT.search((user_agent or "").strip()))


def refuses_tracking(dnt: str | None, gpc: str | None) -> bool:
    """Do-Not-Track or Global Privacy Control set by the browser (the script checks them too, before sending)."""
    return (dnt or "").strip() == "1" or (gpc or "").strip() == "1"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass
class ClientLimiter:
    """Token bucket per client address, in this process and in memory only (never stored or logged).
    With N ingest instances a client can reach N times the rate; the address is the TCP peer, so behind a
    reverse proxy the proxy must do the per-client limiting."""

    rate_per_s: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    max_clients: int = 100_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def check(self, client: str) -> None:
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.clear()  # forgetting buckets only ever lets a client through once more
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate_per_s)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        retry = max(1, math.ceil((1.0 - bucket.tokens) / self.rate_per_s))
        raise refusal(429, "rate_limited", f"too many requests from this client ({self.rate_per_s:g}/s)",
                           {"Retry-After": str(retry)})


# ------------------------------------------------------------------------------------------------ classes

ReferrerClass = Literal["search", "social", "internal", "municipal", "direct", "other"]
"""The classes the tracker tells apart; all are values of the page view's v2 `referrer`."""

SEARCH_HOSTS = ("google.", "bing.", "duckduckgo.", "ecosia.", "qwant.", "startpage.", "search.yahoo.",
                "yandex.", "search.brave.", "metager.", "baidu.", "ask.com")
SOCIAL_HOSTS = ("facebook.", "fb.", "instagram.", "twitter.", "x.com", "t.co", "linkedin.", "lnkd.in", "xing.",
                "youtube.", "tiktok.", "pinterest.", "reddit.", "mastodon.", "threads.net", "bsky.", "whatsapp.",
                "telegram.", "t.me")
MUNICIPAL_SUFFIXES = (".hessen.de", ".bund.de", "verwaltung.de", ".gov.de")
"""Public-administration domains besides the member sites' own origins (see `referrer_class`)."""

def _host_matches(host: str, patterns: Sequence[str]) -> bool:
    labels = host.split(".")
    for pattern in patterns:
        if pattern.endswith("."):
            if any(".".join(labels[i:]).startswith(pattern) for i in range(len(labels))):
                return True
        elif host == pattern or host.endswith("." + pattern.lstrip(".")) or (
                pattern.startswith(".") and host.endswith(pattern)):
            return True
    return False


def referrer_class(ref_host: str, own_host: str, municipal_hosts: frozenset[str]) -> ReferrerClass:
    """Reduce a referrer's host name to a class; the host itself is never stored."""
    host = ref_host.strip().lower().rstrip(".")
    if not host:
        return "direct"
    if host == own_host:
        return "internal"
    if host in municipal_hosts or _host_matches(host, MUNICIPAL_SUFFIXES):
        return "municipal"
    if _host_matches(host, SEARCH_HOSTS):
        return "search"
    if _host_matches(host, SOCIAL_HOSTS):
        return "social"
    return "other"


def device_class(width: int) -> Literal["desktop", "mobile", "tablet", "other"]:
    """From the viewport width in CSS pixels (0: unknown)."""
    if width <= 0:
        return "other"
    if width < 768:
        return "mobile"
    if width < 1024:
        return "tablet"
    return "desktop"


_ID_SEGMENT = re.compile(r"^(?:\d{4,}|[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|"
                         r"[0-9a-f]{24,}|[^/]*@[^/]*)$", re.IGNORECASE)
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f?#]")
MAX_PATH = 200


def normalise_path(raw: str) -> str:
    """A path as published: no query or fragment (allow-listed parameters come as `;name=value`), decoded,
    ids and e-mail-like segments replaced by `:id`, no empty segments or trailing slash, at most 200 characters."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    head, *params = path.split(";")
    segments: list[str] = []
    for seg in head.split("/"):
        seg = _UNSAFE.sub("", unquote(seg))
        if seg:
            segments.append(":id" if _ID_SEGMENT.match(seg) else seg.lower())
    out = "/" + "/".join(segments)
    for param in params:
        name, _, value = param.partition("=")
        name, value = _UNSAFE.sub("", unquote(name)), _UNSAFE.sub("", unquote(value))
        if name and value and not _ID_SEGMENT.match(value):
            out += f";{name}={value[:40]}"
    return out[:MAX_PATH]


# ------------------------------------------------------------------------------------------------ hits


_HIT: TypeAdapter[Hit] = TypeAdapter(Hit)


@dataclass(frozen=True, slots=True)
class Site:
    """What mapping a hit needs to know about where it came from."""

    token: SiteToken
    origin: str
    municipal_hosts: frozenset[str]

    @property
    def host(self) -> str:
        return self.origin.split("://", 1)[1].split(":", 1)[0]


def parse_body(body: bytes) -> tuple[str, list[Any]]:
    """`{"token": ..., "hits": [...]}` as text/plain or JSON; the token and the list shape are request-level."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise refusal(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("token"), str) or not isinstance(doc.get("hits"), list):
        raise refusal(400, "not_a_collect_request", 'body must be {"token": "kps_...", "hits": [...]}')
    if set(doc) - {"token", "hits"}:
        raise refusal(400, "not_a_collect_request", f"unknown fields: {sorted(set(doc) - {'token', 'hits'})}")
    hits: list[Any] = doc["hits"]
    if len(hits) > MAX_HITS:
        raise refusal(413, "payload_too_large", f"{len(hits)} hits; the limit is {MAX_HITS}")
    return doc["token"], hits


def hit_to_envelope(hit: Hit, site: Site, now: datetime) -> dict[str, Any]:
    """The usage event of a hit, as a plain envelope that ingest then validates against the contract."""
    session = hit.session or uuid.uuid4().hex
    device = device_class(hit.width)
    source = TRACKER_SOURCE
    data: dict[str, Any]
    if isinstance(hit, PageviewHit):
        kind = "usage.page.viewed"
        ref = referrer_class(hit.ref, site.host, site.municipal_hosts)
        data = {"page": normalise_path(hit.path), "device": device, "referrer": ref}
    elif isinstance(hit, DownloadHit):
        # Downloads and outbound clicks happen on the site itself.
        kind, data = "usage.page.viewed", {"page": normalise_path(hit.path), "device": device,
                                           "referrer": "internal"}
    elif isinstance(hit, OutboundHit):
        host = hit.host.lower()[:150]
        kind, data = "usage.page.viewed", {"page": f"/_outbound/{host}", "device": device, "referrer": "internal"}
    elif isinstance(hit, FormStartHit):
        kind, data = "usage.session.started", {"channel": "web", "device": device}
    elif isinstance(hit, FormStepHit):
        kind, data = "usage.step.completed", {"step": hit.step, "step_name": hit.name}
    elif isinstance(hit, FormSubmitHit):
        kind, data = "usage.session.submitted", {"duration_s": hit.duration}
    elif isinstance(hit, FormAbandonHit):
        kind, data = "usage.session.abandoned", {"last_step": hit.step}
    else:
        assert isinstance(hit, FeedbackHit)
        source = FEEDBACK_SOURCE
        # The contract bounds comments at 500 characters; a longer text is cut here rather than refused,
        # since the widget's own limit is 500 (scrubbing happens later, as for every platform).
        comment = (hit.comment or "").strip()[:500] or None
        kind, data = "usage.feedback.given", {"stars": hit.stars, **({"comment": comment} if comment else {})}
    version = CURRENT_VERSIONS.get(kind, 1)
    return {"id": str(uuid.uuid4()), "type": kind, "schema_version": version, "source": source,
            "time": now.isoformat(),
            "municipality": site.token.municipality, "service": hit.service or site.token.service,
            "session": session, "data": data}


def hits_to_items(hits: Sequence[Any], site: Site, now: datetime,
                  on_referrer: Callable[[str], None] | None = None) -> list[Item]:
    """One item per hit; a hit that is not a valid hit is rejected alone (`mapping_failed`).
    `on_referrer` sees the referrer class of each page view (for the tracker's own metrics)."""
    items: list[Item] = []
    for i, raw in enumerate(hits):
        try:
            hit = _HIT.validate_python(raw)
        except ValidationError as exc:
            items.append(Item(i, raw, None, ("mapping_failed", pydantic_reasons(exc))))
            continue
        if on_referrer is not None and isinstance(hit, PageviewHit):
            on_referrer(referrer_class(hit.ref, site.host, site.municipal_hosts))
        envelope = hit_to_envelope(hit, site, now)
        items.append(Item(i, raw, envelope))
    return items


# ------------------------------------------------------------------------------------------------ runtime


HostsLoader = Callable[[], Awaitable[list[str]]]


@dataclass
class TrackerRuntime:
    """What the collect endpoint needs, built once in the app's lifespan."""

    tokens: SiteTokens
    clients: ClientLimiter
    max_body_bytes: int
    load_origins: HostsLoader
    hosts_ttl_s: float
    clock: Callable[[], float] = time.monotonic
    _hosts: frozenset[str] = frozenset()
    _hosts_at: float = -math.inf

    async def municipal_hosts(self) -> frozenset[str]:
        """Host names of every member site with an active token (refreshed every `hosts_ttl_s`)."""
        now = self.clock()
        if now - self._hosts_at >= self.hosts_ttl_s:
            origins = await self.load_origins()
            self._hosts = frozenset(o.split("://", 1)[-1].split(":", 1)[0] for o in origins)
            self._hosts_at = now
        return self._hosts
