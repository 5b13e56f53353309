"""Token verification (JWKS from a file, claim paths) and platform credentials, without network or database."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from services.workflow.auth import AuthError, TokenVerifier, check_platform
from services.workflow.settings import CallbackPlatform, WorkflowSettings
from tests.integration.test_workflow_support import ISSUER, Signer


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


class TestTokenVerifier:
    async def test_keycloak_style_role_claim_from_a_jwks_file(self, signer: Signer, tmp_path: Path) -> None:
        jwks = tmp_path / "jwks.json"
        jwks.write_text(signer.jwks)
        verifier = TokenVerifier(WorkflowSettings(oidc_issuer=ISSUER, oidc_jwks_file=jwks,
                                                  oidc_roles_claim="realm_access.roles"))
        import jwt

        token = jwt.encode({"sub": "u1", "iss": ISSUER, "aud": "kommunal-pulse-workflow", "iat": 1, "exp": 2**31,
                            "realm_access": {"roles": ["operator"]}, "municipalities": ["06413000"]},
                           signer.key, algorithm="RS256", headers={"kid": signer.kid})
        principal = await verifier.verify(token)
        assert principal.roles == frozenset({"operator"})
        assert principal.municipalities == frozenset({"06413000"})

    async def test_unconfigured_instance_refuses_every_token(self, signer: Signer) -> None:
        verifier = TokenVerifier(WorkflowSettings())
        with pytest.raises(AuthError) as exc:
            await verifier.verify(signer.token("u", ["clerk"], ["06413000"]))
        assert exc.value.status == 401

    async def test_token_without_expiry_is_refused(self, signer: Signer) -> None:
        import jwt

        verifier = TokenVerifier(WorkflowSettings(oidc_issuer=ISSUER, oidc_jwks_json=signer.jwks))
        token = jwt.encode({"sub": "u", "iss": ISSUER, "aud": "kommunal-pulse-workflow", "iat": 1},
                           signer.key, algorithm="RS256", headers={"kid": signer.kid})
        with pytest.raises(AuthError, match="exp"):
            await verifier.verify(token)

    def test_production_refuses_inline_keys(self, signer: Signer) -> None:
        with pytest.raises(ValueError, match="KP_OIDC_ISSUER must be set in production"):
            WorkflowSettings(environment="production", database_url="postgresql://kp@db/kp",
                             oidc_jwks_json=signer.jwks)


class TestPlatformCredentials:
    def test_right_secret_passes_and_wrong_or_malformed_ones_do_not(self) -> None:
        platforms = {"portal-a": CallbackPlatform(secret_sha256=hashlib.sha256(b"geheim").hexdigest(),
                                                  municipalities=["06413000"])}

        def basic(raw: str) -> str:
            return "Basic " + base64.b64encode(raw.encode()).decode()

        assert check_platform(platforms, basic("portal-a:geheim"))[0] == "portal-a"
        for header in (basic("portal-a:falsch"), basic("portal-b:geheim"), "Basic %%%", "Bearer x", None):
            with pytest.raises(AuthError):
                check_platform(platforms, header)
