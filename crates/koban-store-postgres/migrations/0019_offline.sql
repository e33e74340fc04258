-- Offline payments (koban-pay `offline.rs`, the protocol in koban-offline).

-- The issuer's signing keys for purse and terminal certificates, by number; the private key
-- sealed under the server's key.
CREATE TABLE offline_keys (
    number BIGINT PRIMARY KEY,
    public_key BYTEA NOT NULL,          -- P-256, SEC 1 uncompressed
    private_sealed BYTEA NOT NULL,      -- PKCS #8, sealed
    created_at BIGINT NOT NULL
);

-- A customer's purse: money moved from the wallet into a reserve account of its own, spendable
-- offline by one device key until not_after, settled until not_after + the settlement window.
CREATE TABLE offline_purses (
    id BYTEA PRIMARY KEY,               -- 16 bytes, the certificate's purse id
    user_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    reserve_account BYTEA NOT NULL,     -- ledger account holding the reserve
    amount BIGINT NOT NULL,            -- the limit, loaded into the reserve
    device_key BYTEA NOT NULL,
    certificate BYTEA NOT NULL,         -- exactly as issued
    not_before BIGINT NOT NULL,        -- Unix seconds
    not_after BIGINT NOT NULL,
    deadline BIGINT NOT NULL,          -- not_after + settlement window: the purse closes
    status TEXT NOT NULL,              -- loading | open | revoked | closed | failed (load refused)
    guarantee_factor BIGINT NOT NULL,  -- the settlement policy it was issued under
    reserve_left BIGINT NOT NULL,
    guarantee_left BIGINT NOT NULL,
    revoked_at BIGINT,
    closed_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX offline_purses_user ON offline_purses (user_id, created_at);
CREATE INDEX offline_purses_due ON offline_purses (status, deadline);

-- A merchant's terminal key, certified.
CREATE TABLE offline_terminals (
    id BYTEA PRIMARY KEY,               -- 16 bytes
    merchant_id TEXT NOT NULL,
    terminal_key BYTEA NOT NULL,
    certificate BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX offline_terminals_merchant ON offline_terminals (merchant_id, created_at);

-- Each voucher content decided, once: a retry or the other side's upload gets this back.
CREATE TABLE offline_vouchers (
    purse_id BYTEA NOT NULL,
    digest BYTEA NOT NULL,              -- the content's digest (koban-offline)
    counter BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    cumulative BIGINT NOT NULL,
    terminal_id BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    challenge_time BIGINT NOT NULL,
    merchant_id TEXT NOT NULL,
    decision TEXT NOT NULL,            -- paid | unpaid
    reason TEXT,                       -- why unpaid
    double_spend TEXT,                 -- what made it a sign of double spending
    from_reserve BIGINT NOT NULL,
    from_guarantee BIGINT NOT NULL,
    fee BIGINT NOT NULL,               -- the merchant's fee, fixed when decided
    seq BIGINT NOT NULL,               -- the order of decisions within the purse
    uploaded_by TEXT NOT NULL,         -- merchant | customer
    settled_at BIGINT NOT NULL,        -- ms
    PRIMARY KEY (purse_id, digest)
);
CREATE UNIQUE INDEX offline_vouchers_seq ON offline_vouchers (purse_id, seq);
CREATE INDEX offline_vouchers_merchant ON offline_vouchers (merchant_id, settled_at);
