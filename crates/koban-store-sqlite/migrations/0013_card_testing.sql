-- The card-testing guard, shared by every instance: per source (`merchant:ID`, `ip:NETWORK`)
-- the distinct cards that failed a check lately, and until when the source is declined.
CREATE TABLE card_testing_failures (
    source    TEXT NOT NULL,
    card      INTEGER NOT NULL,   -- the first 8 bytes of the number's keyed fingerprint
    failed_at INTEGER NOT NULL,
    PRIMARY KEY (source, card)
);
CREATE TABLE card_testing_blocks (
    source        TEXT PRIMARY KEY,
    blocked_until INTEGER NOT NULL
);
