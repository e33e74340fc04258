-- Identity, sessions, throttling, notifications and the audit chain. Written in the SQL subset
-- that the SQLite migration of the same number mirrors: ids are text (UUIDv7), times are
-- integer milliseconds since the Unix epoch, booleans are integers.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                -- customer | merchant | operator
    role TEXT,                         -- operators only: admin | analyst | support | approver
    email TEXT NOT NULL UNIQUE,        -- normalised
    email_verified_at BIGINT,
    phone TEXT,
    display_name TEXT NOT NULL,
    legal_name TEXT,
    date_of_birth TEXT,
    password_hash TEXT,                -- PHC string; NULL until an operator enrols
    status TEXT NOT NULL,              -- active | frozen
    cooling_off_until BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,                -- totp | passkey
    label TEXT NOT NULL,
    secret BLOB NOT NULL,             -- sealed with the server key (TOTP seed, or passkey)
    totp_last_step BIGINT NOT NULL,
    credential_id TEXT,                -- passkeys: the credential id, unique across accounts
    confirmed_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX factors_user ON factors (user_id);
CREATE UNIQUE INDEX factors_credential ON factors (credential_id) WHERE credential_id IS NOT NULL;

-- WebAuthn ceremonies between their start and finish (state as JSON), each used once.
CREATE TABLE webauthn_ceremonies (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    session_id TEXT NOT NULL,
    purpose TEXT NOT NULL,             -- register | login | step_up
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id),
    code_hash BLOB NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (id),
    level BIGINT NOT NULL,             -- 1: password only, 2: second factor
    device_id TEXT,
    network TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE known_devices (
    user_id TEXT NOT NULL REFERENCES users (id),
    device_id TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_codes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    purpose TEXT NOT NULL,             -- verify_email | reset_password | change_email
    code_hash BLOB NOT NULL,
    target TEXT,                       -- the new address, for change_email
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX one_time_codes_user ON one_time_codes (user_id, purpose);

CREATE TABLE link_tokens (
    token_hash BLOB PRIMARY KEY,
    purpose TEXT NOT NULL,             -- not_me | cancel_recovery | enrol_operator
    user_id TEXT NOT NULL REFERENCES users (id),
    ref_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE step_ups (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    session_id TEXT NOT NULL,
    action TEXT NOT NULL,
    digest BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE throttle (
    key BLOB PRIMARY KEY,             -- keyed hash of the scope and subject
    failures BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE secret_attempts (
    secret_hash BLOB NOT NULL,        -- keyed hash of a tried secret; kept briefly
    subject_hash BLOB NOT NULL,       -- keyed hash of the account it was tried against
    at BIGINT NOT NULL,
    PRIMARY KEY (secret_hash, subject_hash)
);
CREATE INDEX secret_attempts_at ON secret_attempts (at);

CREATE TABLE failure_minutes (
    minute BIGINT PRIMARY KEY,
    failures BIGINT NOT NULL
);

CREATE TABLE security_alerts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    minute BIGINT NOT NULL,
    observed BIGINT NOT NULL,
    baseline BIGINT NOT NULL,
    raised_at BIGINT NOT NULL,
    UNIQUE (kind, minute)
);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    claimed_until BIGINT,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;

CREATE TABLE mailbox (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    delivered_at BIGINT NOT NULL
);
CREATE INDEX mailbox_recipient ON mailbox (recipient, delivered_at);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);

CREATE TABLE recovery_requests (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    status TEXT NOT NULL,              -- pending | cancelled | approved
    created_at BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT
);
CREATE INDEX recovery_requests_user ON recovery_requests (user_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    environment TEXT NOT NULL,         -- live | test
    prefix TEXT NOT NULL,              -- shown in lists: kind, environment and first characters
    key_hash BLOB NOT NULL UNIQUE,
    scopes TEXT NOT NULL,              -- space-separated
    created_at BIGINT NOT NULL,
    expires_at BIGINT,                 -- set when rotated: the old key works until then
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- A fingerprint of the master key this database was first used with, so an instance started
-- with another key refuses to run instead of splitting sessions and throttling counters.
CREATE TABLE server_key_check (
    id BIGINT PRIMARY KEY,
    fingerprint BLOB NOT NULL
);
