-- Virtual prepaid cards issued on wallets, and what the card network asked of them. A card
-- number is stored only sealed (with the id of the data key that sealed it) and as a keyed
-- fingerprint for lookup; the security code is never stored (it is derived on demand).

CREATE TABLE issued_cards (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    wallet_account BLOB NOT NULL,
    currency TEXT NOT NULL,
    fingerprint BLOB NOT NULL UNIQUE,
    pan_sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    bin TEXT NOT NULL,
    last4 TEXT NOT NULL,
    exp_month BIGINT NOT NULL,
    exp_year BIGINT NOT NULL,
    name TEXT NOT NULL,
    physical BIGINT NOT NULL,
    -- inactive, active or closed
    status TEXT NOT NULL,
    frozen_by_holder BIGINT NOT NULL DEFAULT 0,
    frozen_by_operator BIGINT NOT NULL DEFAULT 0,
    -- wrong security codes or expiry dates in a row; the card locks at the configured count
    bad_codes BIGINT NOT NULL DEFAULT 0,
    activation_hash BLOB,
    activation_attempts BIGINT NOT NULL DEFAULT 0,
    -- reveals of the full details in the hour reveal_hour (hours since the epoch)
    reveal_hour BIGINT NOT NULL DEFAULT 0,
    reveals BIGINT NOT NULL DEFAULT 0,
    -- the holder's controls as JSON (channels, limits, blocked MCCs, allowed countries)
    controls TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activated_at BIGINT,
    closed_at BIGINT
);
CREATE INDEX issued_cards_user ON issued_cards (user_id, created_at);
CREATE INDEX issued_cards_key ON issued_cards (key_id);

-- One row per authorization request, approved or declined. An approved one is a ledger hold
-- (hold_id and its memo leg memo_id) until it is captured, reversed or expires.
CREATE TABLE card_authorizations (
    id TEXT PRIMARY KEY,
    card_id TEXT NOT NULL,
    network_ref TEXT NOT NULL,
    -- approved (open), closed (fully captured or finished), reversed, expired or declined
    status TEXT NOT NULL,
    response_code TEXT NOT NULL,
    amount BIGINT NOT NULL,
    held BIGINT NOT NULL,
    captured BIGINT NOT NULL,
    refunded BIGINT NOT NULL,
    currency TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    merchant_name TEXT NOT NULL,
    mcc TEXT NOT NULL,
    country TEXT NOT NULL,
    channel TEXT NOT NULL,
    hold_id BLOB,
    memo_id BLOB,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX card_authorizations_card ON card_authorizations (card_id, created_at);
CREATE INDEX card_authorizations_open ON card_authorizations (expires_at) WHERE status = 'approved';

-- Incremental authorizations, reversals, clearings (captures) and refunds, keyed by the
-- network's id for each, so a retried message is answered from here.
CREATE TABLE card_operations (
    id TEXT PRIMARY KEY,
    authorization_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    response_code TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX card_operations_auth ON card_operations (authorization_id, created_at);
