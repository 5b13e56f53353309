-- Clerk view sign-in (OIDC Authorization Code + PKCE): logins in flight and server-side sessions.
-- Browsers hold only random ids in cookies; rows are keyed by the SHA-256 of those ids, so a database
-- read does not hand out usable cookies. Tokens stay on the server.
CREATE TABLE wf_oidc_logins (
    login_hash    text PRIMARY KEY,
    state         text NOT NULL,
    nonce         text NOT NULL,
    code_verifier text NOT NULL,
    return_to     text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX wf_oidc_logins_expires ON wf_oidc_logins (expires_at);

CREATE TABLE wf_sessions (
    session_hash   text PRIMARY KEY,
    subject        text NOT NULL,
    display_name   text NOT NULL,
    roles          text[] NOT NULL,
    municipalities text[] NOT NULL,
    csrf_token     text NOT NULL,
    id_token       text NOT NULL,
    created_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX wf_sessions_expires ON wf_sessions (expires_at);
