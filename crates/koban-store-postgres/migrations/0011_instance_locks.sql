-- Locks shared by every process serving from this database (wallets, idempotency claims, card
-- checks), taken by `SqlDb::try_hold`. A row is a lease: its holder deletes it when done, and
-- a row past `expires_at` (its process died) may be taken over. Unlogged: a lock means nothing
-- after a crash of the server, and taking one must not wait for a WAL flush.
CREATE UNLOGGED TABLE instance_locks (
    key        BYTEA PRIMARY KEY,
    instance   BYTEA NOT NULL,
    token      BYTEA NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
