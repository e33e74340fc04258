-- Background work one instance at a time runs (koban-shared's `lease`): who holds each
-- lease, a fence that grows each time it changes hands, and when it runs out (milliseconds).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    fence      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
