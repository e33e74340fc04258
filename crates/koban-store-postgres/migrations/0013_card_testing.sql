-- The card-testing guard, shared by every instance: per source (`merchant:ID`, `ip:ADDRESS`)
-- the distinct cards that failed a check lately, and until when the source is declined.
CREATE TABLE card_testing_failures (
    source    TEXT NOT NULL,
    card      BIGINT NOT NULL,   -- the first 8 bytes of the number's keyed fingerprint
    failed_at BIGINT NOT NULL,
    PRIMARY KEY (source, card)
);
-- For the minutely pruning of what has left the window (and of ended blocks below).
CREATE INDEX card_testing_failures_at ON card_testing_failures (failed_at);
CREATE TABLE card_testing_blocks (
    source        TEXT PRIMARY KEY,
    blocked_until BIGINT NOT NULL
);
CREATE INDEX card_testing_blocks_until ON card_testing_blocks (blocked_until);
