-- The ledger. Ids are 16-byte big-endian blobs (time-ordered for UUIDv7 ids); amounts and
-- balances are minor units; timestamps are nanoseconds since the Unix epoch.
CREATE TABLE accounts (
    id BLOB PRIMARY KEY,
    currency TEXT NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    debits_pending INTEGER NOT NULL,
    debits_posted INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    credits_posted INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_transfer BLOB,
    last_timestamp INTEGER NOT NULL
) WITHOUT ROWID;

-- Transfers are never updated or deleted. `seq` is the commit order. History per account is a
-- linked list (debit_prev / credit_prev, headed by accounts.last_transfer), so the hot path
-- writes no per-account secondary index.
CREATE TABLE transfers (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    debit BLOB NOT NULL,
    credit BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    code INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    pending_id BLOB,
    expires_at INTEGER,
    reference BLOB,
    metadata TEXT,
    timestamp INTEGER NOT NULL,
    debit_prev BLOB,
    credit_prev BLOB,
    debit_balance BLOB NOT NULL,
    credit_balance BLOB NOT NULL
);

-- One row per pending transfer and its fate (0 pending, 1 posted, 2 voided, 3 expired).
CREATE TABLE holds (
    pending_id BLOB PRIMARY KEY,
    debit BLOB NOT NULL,
    credit BLOB NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    code INTEGER NOT NULL,
    expires_at INTEGER,
    state INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX holds_expiring ON holds (expires_at) WHERE state = 0 AND expires_at IS NOT NULL;
