-- What has been claimed against each transfer a customer lost: reversals and
-- compensations of one transfer together never exceed its amount. A claim is taken when the
-- action is requested and given back when the action is rejected or refused.
CREATE TABLE loss_claims (
    transfer_id BLOB PRIMARY KEY,
    amount BIGINT NOT NULL,            -- the transfer's amount
    claimed BIGINT NOT NULL
);
-- A compensation's share of each transfer it covers.
CREATE TABLE compensation_covers (
    action_id TEXT NOT NULL REFERENCES risk_actions (id),
    transfer_id BLOB NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (action_id, transfer_id)
);
-- Reversals asked for before this table existed hold their transfer's whole amount.
INSERT INTO loss_claims (transfer_id, amount, claimed)
    SELECT transfer_id, amount, amount FROM risk_actions
    WHERE kind = 'reverse' AND status IN ('pending', 'executing', 'done') AND transfer_id IS NOT NULL;
-- One execution of an action at a time: the approval that carries it out holds a token,
-- which its outcome must match; a crash halfway frees the action when the lease runs out.
ALTER TABLE risk_actions ADD COLUMN executing_token TEXT;
ALTER TABLE risk_actions ADD COLUMN executing_since BIGINT;
