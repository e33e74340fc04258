-- Personal data sealed at rest (koban-shared `personal.rs`): the data keys, wrapped under a
-- key derived from the master key, and the blind indexes that equality lookups use instead
-- of the values.
CREATE TABLE personal_keys (
    id TEXT PRIMARY KEY,
    wrapped BYTEA NOT NULL,            -- nonce and sealed key, under the master key's wrapping key
    active_from BIGINT NOT NULL,       -- seals from then on (the newest active key seals)
    created_at BIGINT NOT NULL
);

ALTER TABLE users ADD COLUMN email_index BYTEA;
ALTER TABLE users ADD COLUMN phone_index BYTEA;
CREATE UNIQUE INDEX users_email_index ON users (email_index);
CREATE INDEX users_phone_index ON users (phone_index);
DROP INDEX users_phone;

ALTER TABLE outbox ADD COLUMN recipient_index BYTEA;
CREATE INDEX outbox_recipient_index ON outbox (recipient_index, created_at);
DROP INDEX outbox_recipient;

ALTER TABLE mailbox ADD COLUMN recipient_index BYTEA;
CREATE INDEX mailbox_recipient_index ON mailbox (recipient_index, delivered_at);
DROP INDEX mailbox_recipient;
