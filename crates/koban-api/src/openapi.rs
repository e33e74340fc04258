//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::payments::{self, *};
use crate::problem::{CardChallengeOut, Problem, StepUpChallengeOut};
use crate::wire::*;
use crate::{cards, identity, ops, risk};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token from /v1/login, as `Authorization: Bearer`, or the \
                         koban_session cookie with the X-CSRF-Token header on state changes",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "network_signature",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "Koban-Signature",
                    "The card network's requests carry Koban-Network-Id, Koban-Timestamp (Unix \
                     seconds, within 5 minutes of the server's clock) and Koban-Signature: \
                     lowercase hex of HMAC-SHA256 under the network secret over the \
                     length-prefixed parts \"koban-network-v1\", timestamp, method, path and \
                     body (see card_keys::network_signature). A request seen before is refused.",
                ),
            )),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A merchant API key (kbn_sk_live_... or kbn_sk_test_...)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Koban API", description = "Stored-value wallets and payments. Errors are RFC 9457 problem documents (application/problem+json); refused payments carry a stable `code`. Amounts are integer minor units with a `currency`. Every money-moving POST requires an `Idempotency-Key` header: a retry with the same key and body returns the first answer (`replayed: true`), the same key with another body answers 422 `idempotency-key-reused`, a concurrent duplicate 409. Lists use `limit`, `starting_after` and `has_more`.\n\nMerchant QR payload (one line of ASCII): `KB1.<request id: 16 bytes, base64url>.<amount in minor units>.<currency>.<expiry, Unix seconds>.<signature>`; the signature is the first 16 bytes, base64url, of HMAC-SHA256 under a server key over everything before it, so no field can be altered. Customer-presented codes are 18 digits starting with 89 (QR form `KBC1.<digits>`), valid 60 seconds, single use.\n\nWebhooks follow Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, id.timestamp.body))."),
    modifiers(&Security),
    paths(
        identity::signup, identity::verify_email, identity::login, identity::second_factor, identity::logout,
        identity::me, identity::sessions, identity::revoke_session, identity::totp_begin, identity::totp_confirm,
        identity::remove_factor, identity::recovery_codes, identity::change_email, identity::confirm_email,
        identity::change_phone, identity::change_password, identity::not_me, identity::forgot_password,
        identity::reset_password, identity::request_recovery, identity::cancel_recovery, identity::enrol_operator,
        identity::passkey_register_start, identity::passkey_register_finish, identity::passkey_login_start, identity::passkey_login_finish,
        ops::alerts, ops::recovery_requests, ops::approve_recovery, ops::create_operator, ops::audit_log,
        ops::create_api_key, ops::api_keys, ops::rotate_api_key, ops::revoke_api_key, ops::whoami, ops::mailbox,
        payments::wallet, payments::history, payments::statement, payments::submit_kyc, payments::lookup_payee,
        payments::transfer, payments::link_bank, payments::confirm_bank, payments::funding_sources, payments::topup,
        payments::payout, payments::bank_operations, payments::inspect_qr, payments::pay_qr, payments::create_code,
        payments::live_codes, payments::revoke_code, payments::create_request, payments::get_request, payments::charge,
        payments::refund, payments::merchant_balance, payments::merchant_payout, payments::issuer_accounts,
        payments::pending_kyc, payments::approve_kyc, payments::reject_kyc, payments::held_transfers,
        payments::release_held, payments::void_held, payments::set_fee, payments::sandbox_account,
        payments::sandbox_statement, payments::faucet, payments::create_webhook, payments::webhooks,
        payments::rotate_webhook, payments::delete_webhook, payments::webhook_deliveries, payments::redeliver,
        payments::add_card, payments::cards, payments::card_topup,
        cards::create_card, cards::cards, cards::card, cards::activate_card, cards::reveal_card,
        cards::freeze_card, cards::unfreeze_card, cards::set_card_controls, cards::close_card,
        cards::card_activity, cards::operator_freeze_card, cards::authorize, cards::increment,
        cards::reverse, cards::clear, cards::refund,
        payments::set_handle, payments::create_pay_link, payments::pay_link, payments::cancel_pay_link, payments::pay_pay_link,
        risk::risk_alerts, risk::cases, risk::case, risk::assign_case, risk::comment_case, risk::close_case,
        risk::freeze_customer, risk::unfreeze_customer, risk::reverse_transfer, risk::compensate,
        risk::risk_actions, risk::approve_action, risk::reject_action, risk::risk_stats, risk::rules, risk::reload_rules,
    ),
    components(schemas(Problem, StepUpChallengeOut, CardChallengeOut, StepUpIn, MoneyOut))
)]
struct ApiDoc;

/// The document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into())
}
