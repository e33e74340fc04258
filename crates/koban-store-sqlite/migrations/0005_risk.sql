-- Risk engine and fraud operations: every scored event with the features and rules behind its
-- decision (so each decision can be explained and replayed), alerts, cases that group them,
-- analysts' comments, and analyst actions waiting for a second operator (maker-checker).
-- Times are integer milliseconds; ids UUIDv7 text, so rows insert in key order.

CREATE TABLE risk_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,                -- login | funding_link | topup | p2p | merchant_payment | ...
    customer TEXT NOT NULL,            -- the acting customer's user id ('' when unknown)
    device TEXT NOT NULL,              -- the device cookie's id ('' when none)
    network TEXT NOT NULL,             -- IPv4 /24 or IPv6 /64 ('' when not known)
    payee TEXT NOT NULL,               -- the receiving customer's user id ('' when none)
    source TEXT NOT NULL,              -- the funding source ('' when none)
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    failed INTEGER NOT NULL,           -- 1: the attempt failed (wrong password or code)
    action TEXT NOT NULL,              -- allow | alert | challenge | hold | deny
    score BIGINT NOT NULL,
    fired TEXT NOT NULL,               -- JSON: the rules that fired, with action, score, reason
    features TEXT NOT NULL,            -- JSON: every feature value the rules saw
    rules_digest TEXT NOT NULL         -- which rule set decided
);
CREATE INDEX risk_events_at ON risk_events (at);
-- The feature windows: each dimension's recent events of one kind are an index range, and
-- the index carries every column a window adds up, so reading one touches no table row.
CREATE INDEX risk_events_customer ON risk_events (customer, kind, at, amount, failed, id);
CREATE INDEX risk_events_device ON risk_events (device, kind, at, amount, failed, customer, id);
CREATE INDEX risk_events_network ON risk_events (network, kind, at, amount, failed, customer, id);
CREATE INDEX risk_events_payee ON risk_events (payee, kind, at, amount, failed, customer, id);
CREATE INDEX risk_events_source ON risk_events (source, kind, at, amount, failed, customer, id);

CREATE TABLE risk_cases (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,             -- the customer (victim or suspected mule), or 'global'
    subject_role TEXT NOT NULL,        -- customer | payee | network | global
    status TEXT NOT NULL,              -- open | closed
    outcome TEXT,                      -- fraud_confirmed | false_positive (when closed)
    assignee TEXT,
    first_event_at BIGINT NOT NULL,    -- the subject's first event in the day before the alert
    first_alert_at BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT
);
CREATE INDEX risk_cases_subject ON risk_cases (subject, status);
-- At most one open case per subject, whichever instance raises the alert.
CREATE UNIQUE INDEX risk_cases_open ON risk_cases (subject) WHERE status = 'open';
CREATE INDEX risk_cases_status ON risk_cases (status, opened_at);

CREATE TABLE risk_alerts (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    action TEXT NOT NULL,
    score BIGINT NOT NULL,
    event_id TEXT,                     -- the scored event (none for the global alarm)
    subject TEXT NOT NULL,
    case_id TEXT NOT NULL REFERENCES risk_cases (id)
);
CREATE INDEX risk_alerts_case ON risk_alerts (case_id, at);
-- One alert per event and rule.
CREATE UNIQUE INDEX risk_alerts_event_rule ON risk_alerts (event_id, rule);
CREATE INDEX risk_alerts_at ON risk_alerts (at);

CREATE TABLE risk_case_comments (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES risk_cases (id),
    at BIGINT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX risk_case_comments_case ON risk_case_comments (case_id, at);

-- Reversals and compensations: done at once up to the approval threshold, otherwise pending
-- until an approver other than the requester approves.
CREATE TABLE risk_actions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                -- reverse | compensate
    case_id TEXT REFERENCES risk_cases (id),
    transfer_id BLOB,                  -- reverse: the completed transfer
    customer TEXT NOT NULL,            -- compensate: the victim; reverse: the payer
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    note TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending | executing | done | rejected | refused (the ledger said no)
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    approved_by TEXT,
    decided_at BIGINT,
    request_key TEXT UNIQUE,           -- compensations: derived from the requester and their Idempotency-Key
    ledger_id BLOB
);
CREATE INDEX risk_actions_status ON risk_actions (status, requested_at);
-- One reversal per transfer.
CREATE UNIQUE INDEX risk_actions_reverse ON risk_actions (transfer_id) WHERE kind = 'reverse' AND status IN ('pending', 'executing', 'done');
-- A case's timeline reads the subject's audit entries.
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
