-- Why a webhook delivery's last attempt got no HTTP answer (address_refused, dns_failed,
-- connect_failed, tls_failed, no_response, timed_out, endpoint_deleted, secret_unreadable), so
-- a merchant can see what to fix; NULL when the endpoint answered.
ALTER TABLE webhook_deliveries ADD COLUMN last_error TEXT;
