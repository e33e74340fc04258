-- The merchant dashboard lists a merchant's payments, newest first.
CREATE INDEX merchant_payments_merchant ON merchant_payments (merchant_id, created_at);
