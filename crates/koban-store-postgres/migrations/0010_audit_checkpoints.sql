-- The audit chain is keyed from this version on (entries written before stay checkable as
-- they were). The newest ledger checkpoint is found by its action without a scan.
CREATE INDEX audit_log_action ON audit_log (action, seq);
-- Which operator invited an operator (NULL: made on the command line). An approval is refused
-- between operators linked by invitation, so that one admin cannot approve their own request
-- through an account they invited.
ALTER TABLE users ADD COLUMN invited_by text;
-- Releasing a transfer held for review needs two operators: the first asks, a second (not
-- linked to the first by invitation) releases.
ALTER TABLE held_transfers ADD COLUMN release_requested_by TEXT;
