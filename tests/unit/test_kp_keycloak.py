"""How the local stack hands Keycloak to the workflow service and what `kp stack up` prints (nothing started)."""

from __future__ import annotations

from pathlib import Path

from kp.keycloak import CLIENT_ID, DEV_PASSWORD, KeycloakNode, demo_users, describe
from kp.local import LocalStack


class TestStackWiring:
    def test_only_the_workflow_service_gets_the_issuer(self, tmp_path: Path) -> None:
        node = KeycloakNode(tmp_path / "keycloak", port=18180)
        stack = LocalStack(tmp_path, kafka_bootstrap="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:2/y",
                           keycloak=node)
        workflow = stack.service("workflow", port=1)
        assert workflow.env["KP_OIDC_ISSUER"] == "http://127.0.0.1:18180/realms/kommunal-pulse"
        assert workflow.env["KP_OIDC_CLIENT_ID"] == CLIENT_ID
        assert "KP_OIDC_ISSUER" not in stack.service("ingest", port=2).env
        override = stack.service("workflow", {"KP_OIDC_ISSUER": "https://idp.example"}, port=3)
        assert override.env["KP_OIDC_ISSUER"] == "https://idp.example"

    def test_stack_prints_every_demo_user_with_password_roles_and_city(self, tmp_path: Path) -> None:
        lines = describe(KeycloakNode(tmp_path, port=18180))
        text = "\n".join(lines)
        assert "http://127.0.0.1:18180/admin" in text
        assert f"password for all: {DEV_PASSWORD}" in text
        users = demo_users()
        assert len(lines) == 2 + len(users)
        for u in users:
            line = next(line for line in lines if line.strip().startswith(u.username + " "))
            assert u.name in line
            assert ", ".join(u.roles) in line
            assert ", ".join(u.municipalities) in line
