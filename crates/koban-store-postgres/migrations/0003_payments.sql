-- Payments: wallets, verification (KYC), funding sources, the sandbox bank, bank operations in
-- flight, merchants, payment requests and codes, refunds and transfers held for review. Money
-- itself lives only in the ledger; these tables hold what the ledger does not (who owns which
-- account, what was asked for, what a bank said). Ledger ids are 16-byte blobs.

-- Payees are found by phone number as well as by e-mail address.
CREATE INDEX users_phone ON users (phone);

CREATE TABLE wallets (
    user_id TEXT NOT NULL REFERENCES users (id),
    currency TEXT NOT NULL,
    account_id BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, currency)
);

-- Public handles (@name) customers can be paid by.
CREATE TABLE handles (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    handle TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Request-to-pay links: whoever opens one may pay the requester that amount, once.
CREATE TABLE pay_links (
    id TEXT PRIMARY KEY,
    requester_id TEXT NOT NULL REFERENCES users (id),
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    message TEXT,
    expires_at BIGINT NOT NULL,
    cancelled_at BIGINT,
    paid_by TEXT,                      -- the one payer who may pay it (claimed before paying)
    created_at BIGINT NOT NULL
);
CREATE INDEX pay_links_requester ON pay_links (requester_id, created_at);

-- The wallet's posted debits at the start of a day (UTC), so the day's out-flow is a
-- subtraction instead of a walk through the day's history.
CREATE TABLE wallet_days (
    account_id BYTEA NOT NULL,
    day BIGINT NOT NULL,
    debits_at_start BIGINT NOT NULL,
    PRIMARY KEY (account_id, day)
);

CREATE TABLE kyc (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    legal_name TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending | approved | rejected
    submitted_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT
);

-- Payees a customer has paid before (a new payee needs step-up).
CREATE TABLE payees (
    user_id TEXT NOT NULL,
    payee_account BYTEA NOT NULL,
    first_paid_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, payee_account)
);

-- The sandbox bank's own accounts and statements (a simulation, marked as such in the API).
CREATE TABLE sandbox_bank_accounts (
    number TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,            -- who opened it: only they read its statement
    holder_name TEXT NOT NULL,
    behaviour TEXT NOT NULL,           -- normal | fails_settlement
    created_at BIGINT NOT NULL
);
CREATE TABLE sandbox_bank_entries (
    id TEXT PRIMARY KEY,
    number TEXT NOT NULL,
    amount BIGINT NOT NULL,            -- positive: credited to the bank account
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sandbox_bank_entries_number ON sandbox_bank_entries (number, created_at);

CREATE TABLE funding_sources (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    bank TEXT NOT NULL,
    number TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending | verified | failed | expired | removed
    amounts_hash BYTEA NOT NULL,        -- keyed hash of the two micro-deposit amounts
    attempts BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    verified_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX funding_sources_user ON funding_sources (user_id);

-- Cards a customer tops up from, through the sandbox acquirer. The card number is never
-- stored: a keyed fingerprint (to recognise the card) and the last four digits; the security
-- code is used once and forgotten.
CREATE TABLE card_sources (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    fingerprint BYTEA NOT NULL,
    brand TEXT NOT NULL,
    last4 TEXT NOT NULL,
    exp_month BIGINT NOT NULL,
    exp_year BIGINT NOT NULL,
    behaviour TEXT NOT NULL,           -- sandbox: normal | declines | always_challenge
    verified_at BIGINT,                -- first challenge passed
    created_at BIGINT NOT NULL,
    removed_at BIGINT
);
CREATE INDEX card_sources_user ON card_sources (user_id);

-- 3-D Secure-like challenges of card top-ups: bound to the card, amount and idempotency key.
CREATE TABLE card_challenges (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    operation BYTEA NOT NULL,           -- the top-up's ledger id
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    code_hash BYTEA NOT NULL,
    attempts BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    passed_at BIGINT,
    created_at BIGINT NOT NULL
);

-- Top-ups and payouts while the bank (or card acquirer) settles them.
CREATE TABLE bank_operations (
    id BYTEA PRIMARY KEY,               -- the ledger id of the hold
    user_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    kind TEXT NOT NULL,                -- topup | card_topup | payout
    account_id BYTEA NOT NULL,          -- the wallet or merchant account
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending | settled | failed
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    settled_at BIGINT
);
CREATE INDEX bank_operations_due ON bank_operations (status, due_at);
CREATE INDEX bank_operations_source ON bank_operations (source_id, created_at);

CREATE TABLE merchants (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    fee_bps BIGINT NOT NULL,
    fee_fixed_minor BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE payment_requests (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES users (id),
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reference TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Customer-presented codes; the code itself is stored only as a keyed hash.
CREATE TABLE payment_codes (
    id TEXT PRIMARY KEY,
    code_hash BYTEA NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    limit_minor BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX payment_codes_user ON payment_codes (user_id, expires_at);

-- Captured merchant payments and what has been refunded of each.
CREATE TABLE merchant_payments (
    transfer_id BYTEA PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    payer_account BYTEA NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    refunded BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Money movements the risk hook held for review: a hold from the payer into suspense.
CREATE TABLE held_transfers (
    pending_id BYTEA PRIMARY KEY,
    payer_user TEXT NOT NULL,
    payer_account BYTEA NOT NULL,
    payee_account BYTEA NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,              -- held | released | voided
    created_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT
);
CREATE INDEX held_transfers_status ON held_transfers (status, created_at);

-- Merchant webhook endpoints (secrets sealed with the server key) and their deliveries: the
-- webhook outbox, written in the transaction that records the event.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES users (id),
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,         -- space-separated
    secret BYTEA NOT NULL,
    old_secret BYTEA,                   -- still signs until old_secret_until after a rotation
    old_secret_until BIGINT,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,               -- msg_..., the webhook-id header
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending | delivered | failed
    attempts BIGINT NOT NULL,
    last_status_code BIGINT,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);
