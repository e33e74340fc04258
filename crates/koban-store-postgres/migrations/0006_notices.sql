-- The security centre lists the notices sent to a customer, newest first.
CREATE INDEX outbox_recipient ON outbox (recipient, created_at);
