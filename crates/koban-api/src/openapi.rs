//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types.

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::payments::{self, *};
use crate::problem::{CardChallengeOut, Problem, StepUpChallengeOut};
use crate::wire::*;
use crate::{bankfiles, cards, identity, ops, risk};

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
        identity::change_phone, crate::privacy::export, crate::privacy::close, identity::change_password, identity::not_me, identity::forgot_password,
        identity::reset_password, identity::request_recovery, identity::cancel_recovery, identity::enrol_operator,
        identity::passkey_register_start, identity::passkey_register_finish, identity::passkey_login_start, identity::passkey_login_finish,
        ops::alerts, ops::recovery_requests, ops::approve_recovery, ops::create_operator, ops::audit_log,
        ops::create_api_key, ops::api_keys, ops::rotate_api_key, ops::revoke_api_key, ops::whoami, ops::mailbox,
        payments::wallet, payments::history, payments::statement, payments::submit_kyc, payments::lookup_payee,
        payments::transfer, payments::link_bank, payments::confirm_bank, payments::funding_sources, payments::topup,
        payments::payout, payments::bank_operations, payments::inspect_qr, payments::pay_qr, payments::create_code,
        payments::live_codes, payments::revoke_code, payments::create_request, payments::get_request, payments::charge,
        payments::refund, payments::merchant_balance, payments::merchant_payout, payments::issuer_accounts,
        payments::pending_kyc, payments::reveal_kyc, payments::approve_kyc, payments::reject_kyc, payments::held_transfers,
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
        bankfiles::import_statement, bankfiles::statement_lines, bankfiles::resolve_statement_line,
        bankfiles::bank_files, bankfiles::bank_file,
        crate::offline::load_purse, crate::offline::purses, crate::offline::register_terminal,
        crate::offline::revocations, crate::offline::upload_vouchers, crate::offline::exposure,
    ),
    components(schemas(Problem, StepUpChallengeOut, CardChallengeOut, StepUpIn, MoneyOut))
)]
struct ApiDoc;

/// The document as JSON text, for a server configured with `config` (its currencies and
/// limits are named in the schemas).
pub fn openapi_json(config: &koban_pay::PayConfig) -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    contract(&mut doc, config);
    doc.to_string()
}

/// The media type of every error body.
const PROBLEM_JSON: &str = "application/problem+json";

/// What the annotations leave implicit, made explicit in the document:
/// - each error is an RFC 9457 problem document, so error responses declared with a JSON
///   body are declared as `application/problem+json`;
/// - an operation that reads a body, a query or a header can answer 400 (unreadable: bad
///   JSON, another content type, a malformed header or query) and 422 (a value breaks a
///   rule); one with path parameters 404 (nothing there, or not the caller's) and 422;
/// - a secured operation answers 401 without a valid credential and 403 to an account of
///   another kind or role;
/// - an `Idempotency-Key` is required: 1 to 255 printable ASCII characters, not starting or
///   ending with a space (a header's edges are trimmed);
/// - a currency is one this server keeps wallets in;
/// - a step-up answer carries a code or a passkey assertion.
fn contract(doc: &mut Value, config: &koban_pay::PayConfig) {
    let currencies: Vec<&str> = config.currencies.iter().map(|c| c.code()).collect();
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": { PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/Problem" } } }
        })
    };
    let currency = json!({ "type": "string", "enum": &currencies });
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            for operation in item
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                let Some(operation) = operation.as_object_mut() else {
                    continue;
                };
                let mut reads_input = operation.contains_key("requestBody");
                let mut has_path = false;
                for parameter in operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    match parameter["in"].as_str() {
                        Some("path") => has_path = true,
                        _ => reads_input = true,
                    }
                    if parameter["name"] == "Idempotency-Key" {
                        parameter["required"] = json!(true);
                        parameter["schema"] = json!({
                            "type": "string", "minLength": 1, "maxLength": 255,
                            "pattern": "^[!-~]([ -~]*[!-~])?$",
                        });
                    }
                    match parameter["name"].as_str() {
                        Some("currency") => parameter["schema"] = currency.clone(),
                        Some("to") if path == "/v1/payees/lookup" => {
                            parameter["schema"] = json!({ "type": "string" });
                            parameter["schema"]["anyOf"] = payee_rule()["anyOf"].clone();
                        }
                        Some("status") if path == "/v1/ops/cases" => {
                            parameter["schema"] = json!({ "type": ["string", "null"], "enum": ["open", "closed", "all", null] });
                        }
                        Some("status") if path == "/v1/ops/risk-actions" => {
                            parameter["schema"] = json!({ "type": ["string", "null"],
                                "enum": ["pending", "done", "rejected", "refused", "all", null] });
                        }
                        Some("limit") if path == "/v1/wallet/transactions" => {
                            parameter["schema"] = json!({ "type": ["integer", "null"], "minimum": 1, "maximum": 100 });
                        }
                        Some("starting_after") if path == "/v1/wallet/transactions" => {
                            parameter["schema"] =
                                json!({ "type": ["string", "null"], "pattern": UUID });
                        }
                        _ => {}
                    }
                }
                let secured = operation
                    .get("security")
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty());
                let Some(responses) = operation
                    .get_mut("responses")
                    .and_then(Value::as_object_mut)
                else {
                    continue;
                };
                for (status, response) in responses.iter_mut() {
                    if !status.starts_with(['4', '5']) {
                        continue;
                    }
                    let content = response.get_mut("content").and_then(Value::as_object_mut);
                    if let Some(content) = content
                        && let Some(body) = content.remove("application/json")
                    {
                        content.insert(PROBLEM_JSON.into(), body);
                    }
                }
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status)
                        .or_insert_with(|| problem(description));
                };
                if reads_input {
                    add("400", "The request could not be read");
                }
                if reads_input || has_path {
                    add("422", "A value in the request breaks a rule");
                }
                if has_path {
                    add("404", "Nothing is there, or it is not the caller's");
                }
                if secured {
                    add("401", "Not signed in, or the credential is not valid");
                    add(
                        "403",
                        "Not allowed to this account's kind or role, or step-up needed",
                    );
                }
            }
        }
    }
    for (path, registration) in [
        ("/v1/factors/passkeys/register/finish", true),
        ("/v1/login/passkey/finish", false),
    ] {
        let pointer = format!(
            "/paths/{}/post/requestBody/content/application~1json/schema",
            path.replace('~', "~0").replace('/', "~1")
        );
        if let Some(schema) = doc.pointer_mut(&pointer) {
            *schema = json!({
                "type": "object", "additionalProperties": false,
                "required": ["ceremony_id", "credential"],
                "properties": {
                    "ceremony_id": { "type": "string" },
                    "credential": webauthn_credential(registration),
                },
            });
        }
    }
    bound_integers(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            if let Some(property) = schema.pointer_mut("/properties/currency") {
                let nullable = property["type"]
                    .as_array()
                    .is_some_and(|types| types.contains(&json!("null")));
                *property = if nullable {
                    let mut values: Vec<Value> = currencies.iter().map(|c| json!(c)).collect();
                    values.push(Value::Null);
                    json!({ "type": ["string", "null"], "enum": values })
                } else {
                    currency.clone()
                };
            }
        }
        for (name, schema) in schemas.iter_mut() {
            if !name.ends_with("In") {
                continue;
            }
            let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (property, rule) in rules_of(name, config) {
                if let (Some(target), Some(rule)) = (properties.get_mut(property), rule.as_object())
                {
                    for (keyword, value) in rule {
                        target[keyword] = value.clone();
                    }
                }
            }
        }
        if let Some(step_up) = schemas.get_mut("StepUpIn") {
            // Exactly one answer: a code, or a passkey assertion (the other absent or null).
            step_up["properties"]["code"] =
                json!({ "type": ["string", "null"], "example": "123456" });
            step_up["properties"]["passkey"] =
                json!({ "anyOf": [webauthn_credential(false), { "type": "null" }] });
            step_up["oneOf"] = json!([
                { "required": ["code"], "properties": {
                    "code": { "type": "string" }, "passkey": { "type": "null" } } },
                { "required": ["passkey"], "properties": {
                    "passkey": { "type": "object" }, "code": { "type": "null" } } },
            ]);
            step_up["additionalProperties"] = json!(false);
        }
    }
}

/// What a browser's WebAuthn call returns, as JSON: `navigator.credentials.create()` for a
/// registration, `.get()` for an assertion; binary fields are base64url without padding.
fn webauthn_credential(registration: bool) -> Value {
    let bytes = json!({
        "type": "string",
        "pattern": "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
    });
    let response = if registration {
        json!({
            "type": "object",
            "required": ["attestationObject", "clientDataJSON"],
            "properties": { "attestationObject": bytes, "clientDataJSON": bytes },
        })
    } else {
        json!({
            "type": "object",
            "required": ["authenticatorData", "clientDataJSON", "signature"],
            "properties": {
                "authenticatorData": bytes, "clientDataJSON": bytes, "signature": bytes,
                "userHandle": { "anyOf": [bytes, { "type": "null" }] },
            },
        })
    };
    json!({
        "type": "object",
        "required": ["id", "rawId", "response", "type"],
        "properties": {
            "id": { "type": "string" },
            "rawId": bytes,
            "response": response,
            "type": { "type": "string" },
        },
    })
}

/// Every integer the document names gets the bounds of its Rust type (`format` `int64`,
/// `int32` or, with `minimum: 0`, unsigned): a larger number cannot be read (400).
fn bound_integers(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let integer = match &map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(types)) => types.contains(&json!("integer")),
                _ => false,
            };
            if integer {
                let unsigned = map.get("minimum") == Some(&json!(0));
                let (min, max) = match map.get("format").and_then(Value::as_str) {
                    Some("int32") => (json!(i32::MIN), json!(i32::MAX)),
                    Some("uint32") => (json!(0), json!(u32::MAX)),
                    Some("uint64") => (json!(0), json!(u64::MAX)),
                    _ if unsigned => (json!(0), json!(u64::MAX)),
                    _ => (json!(i64::MIN), json!(i64::MAX)),
                };
                map.entry("minimum").or_insert(min);
                map.entry("maximum").or_insert(max);
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// What the server trims: Rust's `str::trim`, Unicode's White_Space. Spelled out because a
/// schema's `\s` is ECMA-262's, which leaves out U+0085 and adds U+FEFF: a note of "\u{85}"
/// would be valid by the document and empty to the server.
macro_rules! ws {
    () => {
        r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// Free text: 1 to `max` characters once trimmed.
fn text_rule(max: usize) -> Value {
    const W: &str = ws!();
    json!({ "pattern": format!(r"^[{W}]*[^{W}]([\s\S]{{0,{}}}[^{W}])?[{W}]*$", max - 2) })
}

/// Why an operator looks at personal data: 5 to 500 characters once trimmed
/// (`koban_auth::customers::check_reason`).
fn reason_rule() -> Value {
    const W: &str = ws!();
    json!({ "pattern": format!(r"^[{W}]*[^{W}][\s\S]{{3,498}}[^{W}][{W}]*$") })
}

/// A name as the server takes it: 1 to `max` characters once trimmed, no control characters.
fn name_rule(max: usize) -> Value {
    const W: &str = ws!();
    const C: &str = r"\x00-\x1f\x7f-\x9f";
    json!({ "pattern": format!(r"^[{W}]*[^{W}{C}]([^{C}]{{0,{}}}[^{W}{C}])?[{W}]*$", max - 2) })
}

/// An e-mail address: printable ASCII, 1 to 64 characters before the `@`, a domain with a dot
/// inside it (surrounding spaces are trimmed).
const EMAIL: &str = concat!(
    "^[",
    ws!(),
    r"]*[!-?A-~]{1,64}@[!-\-/-?A-~][!-?A-~]*\.[!-?A-~]*[!-\-/-?A-~][",
    ws!(),
    "]*$"
);

/// A phone number in E.164 form.
const PHONE: &str = concat!("^[", ws!(), r"]*\+[0-9]{8,15}[", ws!(), "]*$");

/// A handle: 3 to 20 letters, digits or underscores, with or without its `@`.
const HANDLE: &str = concat!("^[", ws!(), "]*@?[A-Za-z0-9_]{3,20}[", ws!(), "]*$");

/// A payee's `@handle`.
const AT_HANDLE: &str = concat!("^[", ws!(), "]*@[A-Za-z0-9_]{3,20}[", ws!(), "]*$");

/// A transfer's ids as the server writes them: a UUID in its hyphenated form, not the nil one.
const UUID: &str = "^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A payee: `@handle`, an E.164 phone number or an e-mail address.
fn payee_rule() -> Value {
    json!({ "anyOf": [
        { "pattern": AT_HANDLE },
        { "pattern": PHONE },
        { "pattern": EMAIL },
    ] })
}

/// The rules the server enforces on the request properties of schema `name`, as JSON Schema
/// keywords (what the wire types' parsers check: `koban_auth::model`, `koban_pay`).
fn rules_of(name: &str, config: &koban_pay::PayConfig) -> Vec<(&'static str, Value)> {
    let mut rules = vec![
        ("amount", json!({ "minimum": 1 })),
        ("email", json!({ "maxLength": 254, "pattern": EMAIL })),
        ("phone", json!({ "pattern": PHONE })),
        ("display_name", name_rule(100)),
        ("legal_name", name_rule(200)),
        ("holder_name", name_rule(200)),
        ("new_password", json!({ "minLength": 12, "maxLength": 256 })),
        ("handle", json!({ "pattern": HANDLE })),
        ("environment", json!({ "enum": ["live", "test"] })),
        (
            "role",
            json!({ "enum": ["admin", "analyst", "support", "approver"] }),
        ),
        (
            "outcome",
            json!({ "enum": ["fraud_confirmed", "false_positive"] }),
        ),
        ("lang", json!({ "enum": ["en", "ja", null] })),
        (
            "behaviour",
            json!({ "enum": ["normal", "fails_settlement", null] }),
        ),
        ("bank", json!({ "enum": ["sandbox", "iso20022"] })),
    ];
    match name {
        "TransferIn" => rules.push(("to", payee_rule())),
        "FaucetIn" => rules.push((
            "amount",
            json!({ "minimum": 1, "maximum": koban_pay::wallets::FAUCET_MAX }),
        )),
        "PaymentCodeIn" => rules.push((
            "limit",
            json!({ "minimum": 1, "maximum": config.code_limit_minor }),
        )),
        "PayLinkIn" => rules.push(("expires_in_s", json!({ "minimum": 60, "maximum": 2_592_000 }))),
        "PaymentRequestIn" => rules.push(("expires_in_s", json!({ "minimum": 30, "maximum": 86_400 }))),
        "RotateApiKeyIn" => rules.push(("overlap_s", json!({ "minimum": 0, "maximum": 604_800 }))),
        "ConfirmLinkIn" => rules.push((
            "amounts",
            json!({ "minItems": 2, "maxItems": 2, "items": { "type": "integer", "minimum": 1, "maximum": 99 } }),
        )),
        "FeeIn" => {
            rules.push(("fee_bps", json!({ "minimum": 0, "maximum": 10_000 })));
            rules.push(("fee_fixed_minor", json!({ "minimum": 0, "maximum": 1_000_000_000 })));
        }
        "CommentIn" => rules.push(("body", text_rule(2_000))),
        "ReverseIn" | "CompensateIn" | "ResolveIn" => rules.push(("note", text_rule(500))),
        "FreezeIn" => rules.push(("reason", text_rule(500))),
        "RevealIn" => rules.push(("reason", reason_rule())),
        "LoginIn" => rules.push(("password", json!({ "minLength": 1, "maxLength": 256 }))),
        "SignupIn" | "EnrolOperatorIn" => {
            rules.push(("password", json!({ "minLength": 12, "maxLength": 256 })));
            rules.push(("kind", json!({ "enum": ["customer", "merchant", null] })));
        }
        "CreateApiKeyIn" => {
            rules.push(("name", name_rule(100)));
            rules.push((
                "scopes",
                json!({ "minItems": 1, "items": { "type": "string", "enum":
                    ["payments:read", "payments:write", "refunds:write", "webhooks:manage"] } }),
            ));
        }
        _ => {}
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(rule: &Value) -> regex::Regex {
        regex::Regex::new(rule["pattern"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn text_patterns_trim_what_the_server_trims() {
        let reason = compiled(&reason_rule());
        assert!(!reason.is_match("     "));
        assert!(!reason.is_match(" abc "));
        assert!(reason.is_match(" abcde "));
        assert!(reason.is_match(&"r".repeat(500)));
        assert!(!reason.is_match(&"r".repeat(501)));
        let patterns = [
            reason_rule(),
            text_rule(500),
            name_rule(80),
            json!({ "pattern": EMAIL }),
            json!({ "pattern": PHONE }),
            json!({ "pattern": HANDLE }),
            json!({ "pattern": AT_HANDLE }),
        ];
        // `\s` means one set in the JSON Schema's regex dialect (ECMA-262) and another in
        // Rust's and Python's: only "any character" may use it.
        for rule in &patterns {
            let pattern = rule["pattern"].as_str().unwrap().replace(r"[\s\S]", "");
            assert!(
                !pattern.contains(r"\s") && !pattern.contains(r"\S"),
                "{pattern}"
            );
        }
        let (text, name) = (compiled(&patterns[1]), compiled(&patterns[2]));
        // Every character alone, between spaces: valid by the document exactly when the
        // server's trim leaves something.
        for c in (0..=0x3100u32).chain([0xfeff]).filter_map(char::from_u32) {
            let alone = format!(" {c} ");
            let kept = !alone.trim().is_empty();
            assert_eq!(text.is_match(&alone), kept, "U+{:04X}", c as u32);
            if !kept {
                assert!(!name.is_match(&alone), "U+{:04X}", c as u32);
            }
        }
        assert!(!text.is_match("\u{85}\n "), "what schemathesis sent");
        assert!(text.is_match(" a\u{85}b "));
        let email = compiled(&patterns[3]);
        assert!(email.is_match(" kenji@example.jp\u{85}"));
        assert!(
            !email.is_match("\u{feff}kenji@example.jp"),
            "U+FEFF is not trimmed"
        );
        assert!(compiled(&patterns[4]).is_match("\u{3000}+819012345678"));
    }
}
