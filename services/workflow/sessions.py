"""Server-side sessions of the clerk view and the logins in flight that lead to them.

The browser holds only random ids (cookies `kp_session`, `kp_login`); the database keys their SHA-256, so the
tokens, roles and CSRF secret stay on the server. A session ends at logout, after `KP_SESSION_IDLE_S` without
a request, or `KP_SESSION_MAX_AGE_S` after login, whichever comes first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.workflow import repository
from services.workflow.auth import Principal
from services.workflow.settings import WorkflowSettings
from shared.db import Conn

SESSION_COOKIE = "kp_session"
LOGIN_COOKIE = "kp_login"
LOGIN_TTL = timedelta(minutes=10)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same_secret(submitted: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted secret (any text) with the expected one."""
    return submitted is not None and hmac.compare_digest(submitted.encode(), expected.encode())


def safe_return_path(value: str | None) -> str:
    """Only paths of the clerk view are valid targets after login (no open redirect)."""
    if value and value.startswith("/sachbearbeitung") and "//" not in value and "\\" not in value:
        return value
    return "/sachbearbeitung"


@dataclass(frozen=True)
class Login:
    state: str
    nonce: str
    code_verifier: str
    return_to: str


@dataclass(frozen=True)
class Session:
    principal: Principal
    display_name: str
    csrf_token: str
    id_token: str

    def csrf_ok(self, submitted: str | None) -> bool:
        return same_secret(submitted, self.csrf_token)


async def start_login(conn: Conn, login: Login, now: datetime) -> str:
    """Store a login in flight; returns the cookie value that binds it to this browser."""
    cookie = new_secret()
    await repository.add_login(conn, {
        "login_hash": digest(cookie), "state": login.state, "nonce": login.nonce,
        "code_verifier": login.code_verifier, "return_to": login.return_to, "created_at": now,
        "expires_at": now + LOGIN_TTL,
    })
    return cookie


async def finish_login(conn: Conn, cookie: str | None, state: str | None, now: datetime) -> Login | None:
    """The login this browser started, if the state answers it; used once."""
    if not cookie or not state:
        return None
    row = await repository.take_login(conn, digest(cookie), now)
    if row is None or not same_secret(state, row["state"]):
        return None
    return Login(row["state"], row["nonce"], row["code_verifier"], row["return_to"])


async def create(conn: Conn, settings: WorkflowSettings, principal: Principal, display_name: str, id_token: str,
                 now: datetime) -> str:
    """A new session for the verified principal; returns the cookie value."""
    cookie = new_secret()
    await repository.add_session(conn, {
        "session_hash": digest(cookie), "subject": principal.subject, "display_name": display_name,
        "roles": sorted(principal.roles), "municipalities": sorted(principal.municipalities),
        "csrf_token": new_secret(), "id_token": id_token, "created_at": now,
        "expires_at": now + timedelta(seconds=settings.session_max_age_s),
    })
    return cookie


async def load(conn: Conn, settings: WorkflowSettings, cookie: str | None, now: datetime) -> Session | None:
    if not cookie:
        return None
    row = await repository.touch_session(conn, digest(cookie), now, now - timedelta(seconds=settings.session_idle_s))
    if row is None:
        return None
    principal = Principal(row["subject"], frozenset(row["roles"]), frozenset(row["municipalities"]))
    return Session(principal, row["display_name"], row["csrf_token"], row["id_token"])


async def end(conn: Conn, cookie: str | None) -> str | None:
    """Delete the session; returns its ID token (the hint for the provider's logout) if it existed."""
    if not cookie:
        return None
    row = await repository.delete_session(conn, digest(cookie))
    return str(row["id_token"]) if row else None
