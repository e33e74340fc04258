-- The ledger. Ids are 16-byte big-endian values (time-ordered for UUIDv7 ids); amounts and
-- balances are minor units; timestamps are nanoseconds since the Unix epoch.
CREATE TABLE accounts (
    id bytea PRIMARY KEY CHECK (length(id) = 16),
    currency text NOT NULL,
    code integer NOT NULL,
    flags integer NOT NULL,
    debits_pending bigint NOT NULL CHECK (debits_pending >= 0),
    debits_posted bigint NOT NULL CHECK (debits_posted >= 0),
    credits_pending bigint NOT NULL CHECK (credits_pending >= 0),
    credits_posted bigint NOT NULL CHECK (credits_posted >= 0),
    created_at bigint NOT NULL,
    last_transfer bytea,
    last_timestamp bigint NOT NULL
);

-- Transfers are never updated or deleted. `seq` is the commit order. History per account is a
-- linked list (debit_prev / credit_prev, headed by accounts.last_transfer), so the hot path
-- writes no per-account secondary index.
CREATE TABLE transfers (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id bytea NOT NULL UNIQUE CHECK (length(id) = 16),
    debit bytea NOT NULL,
    credit bytea NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    currency text NOT NULL,
    code integer NOT NULL,
    kind smallint NOT NULL,
    pending_id bytea,
    expires_at bigint,
    reference bytea,
    metadata text,
    timestamp bigint NOT NULL,
    debit_prev bytea,
    credit_prev bytea,
    debit_balance bytea NOT NULL,
    credit_balance bytea NOT NULL
);

-- One row per pending transfer and its fate (0 pending, 1 posted, 2 voided, 3 expired).
CREATE TABLE holds (
    pending_id bytea PRIMARY KEY,
    debit bytea NOT NULL,
    credit bytea NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    code integer NOT NULL,
    expires_at bigint,
    state smallint NOT NULL
);

CREATE INDEX holds_expiring ON holds (expires_at) WHERE state = 0 AND expires_at IS NOT NULL;
