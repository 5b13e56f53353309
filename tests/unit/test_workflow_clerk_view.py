"""Clerk view pieces without network or database: German wording, the OIDC relying party against a mocked
provider, return-path and production settings rules."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from kp.keycloak import REALM_FILE, demo_users
from services.workflow import labels
from services.workflow.definitions import load_definitions
from services.workflow.model import Case, CaseContext, CaseState
from services.workflow.oidc import Discovery, OidcError, RelyingParty
from services.workflow.service import statutory_due
from services.workflow.sessions import safe_return_path, same_secret
from services.workflow.settings import WorkflowSettings
from shared.reference import municipalities

ISSUER = "https://login.example-kommune.de/realms/kp"
META = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/certs", "end_session_endpoint": f"{ISSUER}/logout",
        "code_challenge_methods_supported": ["plain", "S256"]}


class TestWording:
    def test_amounts_in_euro_with_german_separators(self) -> None:
        assert labels.euro(3000) == "30,00\u00a0€"
        assert labels.euro(123456789) == "1.234.567,89\u00a0€"
        assert labels.euro(5) == "0,05\u00a0€"
        assert labels.euro(None) == labels.NONE

    def test_times_are_berlin_local_in_summer_and_winter(self) -> None:
        assert labels.local_time(datetime(2026, 7, 1, 10, 0, tzinfo=UTC)) == "01.07.2026, 12:00 Uhr"
        assert labels.local_time("2026-12-31T23:30:00+00:00") == "01.01.2027, 00:30 Uhr"
        assert labels.local_date(datetime(2026, 3, 29, 22, 30, tzinfo=UTC)) == "30.03.2026"

    def test_history_rows_read_as_sentences_with_titles_not_codes(self) -> None:
        registry = load_definitions()
        gewerbe = registry.get("gewerbe-anmeldung", 1)
        assert labels.sentence("step_entered", {"step": "gebuehr", "kind": "automatic"}, {"step": "eingang"},
                               {"step": "gebuehr"}, gewerbe) == (
            "Schritt „Gebühr festsetzen und Zahlung anfordern“ begonnen.")
        assert labels.sentence("fee_calculated", {"fee_cents": 3000}, None, None, gewerbe) == (
            "Gebühr festgesetzt: 30,00\u00a0€; Zahlung angefordert.")
        assert labels.sentence("task_assigned", {"queue": "gewerbe-a", "loads": {}}, None, None, gewerbe) == (
            "Aufgabe an die Warteschlange „Gewerbeamt, Team A“ gegeben.")
        assert labels.sentence("case_closed", {"outcome": "approved", "processing_time_s": 3 * 86400 + 7200},
                               None, None, gewerbe) == (
            "Vorgang abgeschlossen (genehmigt), Bearbeitungsdauer 3 Tage und 2 Stunden.")
        assert labels.sentence("documents_added", {"documents": ["ausweisdokument"]}, None, None, gewerbe) == (
            "Unterlagen nachgereicht: Ausweisdokument.")
        assert labels.duration(1) == "1 Minute"
        assert labels.duration(3600) == "1 Stunde"
        assert labels.duration(86400) == "1 Tag"

    def test_every_audit_action_the_engine_writes_has_a_sentence(self) -> None:
        import re
        from pathlib import Path

        import services.workflow.service as service

        source = Path(service.__file__).read_text(encoding="utf-8")
        actions = set(re.findall(r'\.audit\([^,]+, "([a-z_]+)"', source))
        assert len(actions) > 20
        generic = {a for a in actions if labels.sentence(a, {}, None, None, None) == (
            a.replace("_", " ").capitalize() + ".")}
        assert generic == set()

    def test_people_are_shown_by_role_never_by_id(self) -> None:
        assert labels.actor("3f1c-uuid", "3f1c-uuid") == "Sie"
        assert labels.actor("another-uuid", "3f1c-uuid") == "Sachbearbeitung"
        assert labels.actor("operator:x", "me") == "Betrieb"
        assert labels.actor("event:portal-a", "me") == "Antragsverfahren"


class TestDueDates:
    def test_a_step_without_deadline_is_due_at_the_statutory_deadline_or_the_fiction_if_earlier(self) -> None:
        bau = load_definitions().get("baugenehmigung-vereinfacht", 1)
        opened = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)

        def case(fiction_due: datetime | None = None) -> Case:
            return Case(case_id=uuid.uuid4(), application_id="A-1", municipality="06413000",
                        service="99012070006001", definition=bau.name, definition_version=1,
                        state=CaseState.TASK, current_step="pruefung", step_entered_at=opened, opened_at=opened,
                        context=CaseContext(fiction_due=fiction_due))

        assert statutory_due(bau, case()) == opened + timedelta(days=90)
        fiction = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        assert statutory_due(bau, case(fiction)) == fiction
        late = datetime(2026, 6, 1, tzinfo=UTC)
        assert statutory_due(bau, case(late)) == opened + timedelta(days=90)


def _provider(token_status: int = 200, issuer: str = ISSUER) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={**META, "issuer": issuer})
        if request.url.path.endswith("/token"):
            if token_status != 200:
                return httpx.Response(token_status, json={"error": "invalid_grant"})
            return httpx.Response(200, json={"access_token": "a.b.c", "id_token": "d.e.f", "token_type": "Bearer"})
        return httpx.Response(404)

    return httpx.MockTransport(handle), seen


def _settings(**extra: object) -> WorkflowSettings:
    return WorkflowSettings(oidc_issuer=ISSUER, oidc_client_secret="geheim", **extra)  # type: ignore[arg-type]


class TestRelyingParty:
    async def test_authorization_request_uses_pkce_s256_state_and_nonce(self) -> None:
        transport, _ = _provider()
        rp = RelyingParty(_settings(), Discovery(_settings(), transport))
        first = await rp.authorization_request("http://127.0.0.1:8004/sachbearbeitung/anmeldung")
        second = await rp.authorization_request("http://127.0.0.1:8004/sachbearbeitung/anmeldung")
        query = {k: v[0] for k, v in parse_qs(urlsplit(first.url).query).items()}
        assert first.url.startswith(f"{ISSUER}/auth?")
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        digest = base64.urlsafe_b64encode(hashlib.sha256(first.code_verifier.encode()).digest()).rstrip(b"=")
        assert query["code_challenge"] == digest.decode()
        assert (query["state"], query["nonce"]) == (first.state, first.nonce)
        assert "openid" in query["scope"].split()
        assert len({first.state, second.state, first.nonce, second.nonce}) == 4
        assert first.code_verifier != second.code_verifier

    async def test_code_exchange_authenticates_the_client_and_sends_the_verifier(self) -> None:
        transport, seen = _provider()
        rp = RelyingParty(_settings(), Discovery(_settings(), transport))
        tokens = await rp.exchange("code-1", "verifier-1", "http://127.0.0.1/sachbearbeitung/anmeldung")
        assert (tokens.access_token, tokens.id_token) == ("a.b.c", "d.e.f")
        token_call = seen[-1]
        form = {k: v[0] for k, v in parse_qs(token_call.content.decode()).items()}
        assert form["code_verifier"] == "verifier-1"
        assert form["grant_type"] == "authorization_code"
        assert token_call.headers["authorization"] == "Basic " + base64.b64encode(
            b"kommunal-pulse-workflow:geheim").decode()

    async def test_refused_exchange_and_foreign_issuer_are_errors(self) -> None:
        transport, _ = _provider(token_status=400)
        rp = RelyingParty(_settings(), Discovery(_settings(), transport))
        with pytest.raises(OidcError, match="invalid_grant"):
            await rp.exchange("code", "verifier", "http://127.0.0.1/cb")
        transport, _ = _provider(issuer="https://evil.example/realms/kp")
        with pytest.raises(OidcError, match="expected"):
            await Discovery(_settings(), transport).metadata()

    async def test_logout_goes_to_the_end_session_endpoint_with_the_id_token_hint(self) -> None:
        transport, _ = _provider()
        rp = RelyingParty(_settings(), Discovery(_settings(), transport))
        url = await rp.logout_url("id.token", "http://127.0.0.1/sachbearbeitung/abgemeldet")
        assert url is not None
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert url.startswith(f"{ISSUER}/logout?")
        assert query == {"id_token_hint": "id.token", "client_id": "kommunal-pulse-workflow",
                         "post_logout_redirect_uri": "http://127.0.0.1/sachbearbeitung/abgemeldet"}


class TestGuards:
    @pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/sachbearbeitung//evil",
                                        "/docs", "/sachbearbeitung\\..\\x", None, ""])
    def test_return_path_stays_in_the_clerk_view(self, target: str | None) -> None:
        assert safe_return_path(target) == "/sachbearbeitung"

    def test_own_paths_are_kept(self) -> None:
        assert safe_return_path("/sachbearbeitung/vorgaenge/1?x=2") == "/sachbearbeitung/vorgaenge/1?x=2"

    def test_csrf_comparison_takes_any_text(self) -> None:
        assert same_secret("abc", "abc")
        assert not same_secret("äbc", "abc")
        assert not same_secret(None, "abc")

    @pytest.mark.parametrize(("extra", "message"), [
        ({"public_url": "http://workflow.example.org"}, "KP_PUBLIC_URL"),
        ({"public_url": "https://workflow.example.org", "session_cookie_secure": False}, "COOKIE_SECURE"),
        ({"public_url": "https://workflow.example.org", "oidc_client_secret": "dev-only-workflow-secret"},
         "demo realm"),
    ])
    def test_production_refuses_dev_shortcuts(self, extra: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            WorkflowSettings(environment="production", database_url="postgresql://kp@db/kp", oidc_issuer=ISSUER,
                             **extra)  # type: ignore[arg-type]

    def test_production_with_discovery_only_is_accepted_and_cookies_are_secure(self) -> None:
        settings = WorkflowSettings(environment="production", database_url="postgresql://kp@db/kp",
                                    oidc_issuer=ISSUER, public_url="https://workflow.example.org")
        assert settings.cookie_secure
        assert not WorkflowSettings().cookie_secure


class TestDemoRealm:
    def test_realm_has_clerk_team_lead_and_operator_in_two_cities_with_known_codes(self) -> None:
        users = demo_users()
        known = {m.ags for m in municipalities()}
        cities = {ags for u in users for ags in u.municipalities}
        assert len(cities) >= 2
        assert cities <= known
        for ags in cities:
            roles = {r for u in users if ags in u.municipalities for r in u.roles}
            assert {"clerk", "team_lead", "operator"} <= roles

    def test_client_requires_pkce_and_maps_the_claims_the_service_reads(self) -> None:
        realm = json.loads(REALM_FILE.read_text(encoding="utf-8"))
        client = next(c for c in realm["clients"] if c["clientId"] == "kommunal-pulse-workflow")
        assert client["attributes"]["pkce.code.challenge.method"] == "S256"
        assert not client["directAccessGrantsEnabled"]
        claims = {m["config"].get("claim.name") for m in client["protocolMappers"]}
        defaults = WorkflowSettings()
        assert {defaults.oidc_roles_claim, defaults.oidc_municipalities_claim} <= claims
        audience = next(m for m in client["protocolMappers"] if m["protocolMapper"] == "oidc-audience-mapper")
        assert audience["config"]["included.client.audience"] == defaults.oidc_audience
