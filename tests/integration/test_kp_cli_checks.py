"""`kp` refuses unknown municipalities and reports network failures in one line, run as the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from kp.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def kp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kp.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, **env}, check=False)


@pytest.fixture
def stack_env(database_url: str, kafka_bootstrap: str) -> dict[str, str]:
    return {"KP_DATABASE_URL": database_url, "KP_KAFKA_BOOTSTRAP": kafka_bootstrap}


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


class TestUnknownMunicipality:
    async def test_apikey_create_refuses_an_unknown_code(
        self, stack_env: dict[str, str], db: asyncpg.Connection, unique: str
    ) -> None:
        result = kp("apikey", "create", "--platform", f"p-{unique}", "-m", "99999999", env=stack_env)
        assert result.returncode == 2
        assert "99999999" in _one_line_error(result)
        assert "--new-member" in result.stderr
        assert await db.fetchval("SELECT count(*) FROM ingest_api_keys WHERE platform = $1", f"p-{unique}") == 0

    async def test_new_member_city_needs_the_explicit_override(
        self, stack_env: dict[str, str], db: asyncpg.Connection, unique: str
    ) -> None:
        result = kp("apikey", "create", "--platform", f"p-{unique}", "-m", "06440001", "--new-member",
                    env=stack_env)
        assert result.returncode == 0, result.stderr
        scope = await db.fetchval("SELECT municipalities FROM ingest_api_keys WHERE platform = $1", f"p-{unique}")
        assert [m.strip() for m in scope] == ["06440001"]

    def test_known_city_needs_no_override(self, stack_env: dict[str, str], unique: str) -> None:
        result = kp("apikey", "create", "--platform", f"p-{unique}", "-m", "06534014", env=stack_env)
        assert result.returncode == 0, result.stderr
        assert "06534014" in result.stdout

    def test_datasets_issue_key_refuses_an_unknown_code(self, stack_env: dict[str, str], unique: str) -> None:
        result = kp("datasets", "issue-key", "--label", f"l-{unique}", "-m", "99999999", env=stack_env)
        assert result.returncode == 1
        assert "99999999" in _one_line_error(result)


class TestNetworkErrors:
    def test_unreachable_publisher_is_one_line(self, tmp_path: Path) -> None:
        description = tmp_path / "ds.yaml"
        description.write_text("name: parken\nmunicipality: '06413000'\n")
        result = kp("datasets", "create", str(description), "--key", "kpp_x", "--url",
                    f"http://127.0.0.1:{free_port()}", env={})
        assert result.returncode == 1
        line = _one_line_error(result)
        assert "cannot reach http://127.0.0.1:" in line
        assert "kp stack up" in line

    def test_unreachable_database_is_one_line(self) -> None:
        env = {"KP_DATABASE_URL": f"postgresql://kp@127.0.0.1:{free_port()}/kp", "KP_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
        result = kp("apikey", "list", env=env)
        assert result.returncode == 1
        assert "KP_DATABASE_URL" in _one_line_error(result)


class TestRevoke:
    @pytest.mark.parametrize(("group", "table", "what"),
                             [("apikey", "ingest_api_keys", "key"), ("sitetoken", "ingest_site_tokens", "site token")])
    async def test_revokes_once_then_says_there_is_no_active_one(
        self, stack_env: dict[str, str], db: asyncpg.Connection, unique: str, group: str, table: str, what: str
    ) -> None:
        create = (["apikey", "create", "--platform", f"p-{unique}", "-m", "06534014"] if group == "apikey" else
                  ["sitetoken", "create", "-m", "06534014", "--service", "99115005104000", "--origin", f"https://{unique}.example"])
        created = kp(*create, env=stack_env)
        assert created.returncode == 0, created.stderr
        given = created.stdout.split()[1]
        first = kp(group, "revoke", given, env=stack_env)
        assert (first.returncode, first.stdout.strip()) == (0, f"revoked {given}"), first.stderr
        assert await db.fetchval(f"SELECT revoked_at IS NOT NULL FROM {table} WHERE id = $1::uuid", given)
        again = kp(group, "revoke", given, env=stack_env)
        assert again.returncode == 1
        assert _one_line_error(again) == f"error: no active {what} {given}"

    @pytest.mark.parametrize("group", ["apikey", "sitetoken"])
    def test_refuses_what_is_no_id(self, stack_env: dict[str, str], group: str) -> None:
        result = kp(group, "revoke", "not-an-id", env=stack_env)
        assert result.returncode == 2
        assert "'not-an-id' is not a" in _one_line_error(result)
