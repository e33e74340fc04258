-- Retention and closure (koban-pay `retention.rs`). Risk decisions past their retention
-- window, counted per month, kind, action and currency before their records are deleted.
CREATE TABLE risk_event_months (
    month TEXT NOT NULL,               -- YYYY-MM (UTC)
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    currency TEXT NOT NULL,
    events BIGINT NOT NULL,
    amount BIGINT NOT NULL,            -- minor units, summed
    PRIMARY KEY (month, kind, action, currency)
);

-- When a customer closed their account (status 'closed'); erasure of their personal data
-- follows the legal retention period after it.
ALTER TABLE users ADD COLUMN closed_at BIGINT;
