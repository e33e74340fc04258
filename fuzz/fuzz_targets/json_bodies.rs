//! JSON bodies of the money-moving endpoints, read as the server reads them
//! (`koban_api::extract::json_body`). Properties: any bytes are read or refused, never a
//! panic; only a well-formed JSON object is read; a refusal says the same whatever the strings in the body
//! hold, and never repeats a key the request does not name (a key can be a card number); an amount written as an exact integer in
//! any JSON form (`1200`, `1200.000`, `1.2e3`, `12000e-1`) reads as that integer, and one
//! written with a fraction (`1200.0000000000001`) is refused.
#![no_main]

use koban_api::extract::json_body;
use koban_api::payments::{BankMoveIn, ChargeIn, FaucetIn, PaymentRequestIn, RefundIn, TransferIn};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check<T: serde::de::DeserializeOwned>(body: &[u8]) {
    match json_body::<T>(body) {
        Ok(_) => {
            assert_eq!(body.trim_ascii_start().first(), Some(&b'{'));
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
                "only well-formed JSON is read"
            );
        }
        Err(error) => {
            let detail = format!("{error:?}");
            // What the request takes ("expected one of `to`, ...") is the request's own list.
            let said = detail.split(", expected").next().unwrap_or_default();
            if let Ok(value) = serde_json::from_slice::<Value>(body) {
                // No key the request does not name is repeated (a key can be a card number).
                for key in keys(&value) {
                    let named = key.starts_with(|c: char| c.is_ascii_lowercase())
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    assert!(
                        named || key.len() < 6 || !said.contains(key.as_str()),
                        "a refusal repeated a key: {detail}"
                    );
                }
                let again = json_body::<T>(&masked(body))
                    .err()
                    .map(|e| format!("{e:?}"));
                assert_eq!(Some(detail), again, "a refusal depends on a value");
            }
        }
    }
}

/// Every key of every object in `value`.
fn keys(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().flat_map(keys).collect(),
        Value::Object(fields) => fields
            .iter()
            .flat_map(|(key, value)| std::iter::once(key.clone()).chain(keys(value)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The body as written, with every string value (not a key) replaced by as many `z`s.
fn masked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    while at < body.len() {
        if body[at] != b'"' {
            out.push(body[at]);
            at += 1;
            continue;
        }
        let mut end = at + 1;
        while end < body.len() && body[end] != b'"' {
            end += if body[end] == b'\\' { 2 } else { 1 };
        }
        let end = (end + 1).min(body.len());
        let token = &body[at..end];
        let is_key = body[end..].trim_ascii_start().first() == Some(&b':');
        match serde_json::from_slice::<String>(token) {
            Ok(text) if !is_key => {
                out.push(b'"');
                out.extend(std::iter::repeat_n(b'z', text.chars().count()));
                out.push(b'"');
            }
            _ => out.extend_from_slice(token),
        }
        at = end;
    }
    out
}

/// A number written in one of JSON's forms, chosen by `form`, and the integer it is, if it is
/// one (a form may add a fraction, or divide by a power of ten).
fn written(integer: i64, form: u8, extra: u8) -> (String, Option<i64>) {
    let zeros = "0".repeat(usize::from(extra % 8));
    match form % 6 {
        0 => (integer.to_string(), Some(integer)),
        1 => (format!("{integer}.{zeros}0"), Some(integer)),
        // (JSON allows no leading zero: 0 is written 0e-3, not 0000e-3.)
        2 if integer == 0 => (format!("0e-{}", zeros.len()), Some(0)),
        2 => (format!("{integer}{zeros}e-{}", zeros.len()), Some(integer)),
        3 => (format!("{integer}.{zeros}1"), None),
        4 => {
            // d.ddd × 10^k
            let digits = integer.unsigned_abs().to_string();
            let sign = if integer < 0 { "-" } else { "" };
            let (head, tail) = digits.split_at(1);
            let text = if tail.is_empty() {
                format!("{sign}{head}e0")
            } else {
                format!("{sign}{head}.{tail}e{}", tail.len())
            };
            (text, Some(integer))
        }
        _ => {
            let power = 10_i64.pow(1 + u32::from(extra % 3));
            let text = format!("{integer}e-{}", 1 + extra % 3);
            (text, (integer % power == 0).then(|| integer / power))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<TransferIn>(data);
    check::<FaucetIn>(data);
    check::<BankMoveIn>(data);
    check::<PaymentRequestIn>(data);
    check::<ChargeIn>(data);
    check::<RefundIn>(data);
    // An amount in each form, inside an otherwise valid transfer.
    if let Some((head, _)) = data.split_first_chunk::<10>() {
        let integer = i64::from_le_bytes(head[..8].try_into().unwrap()) >> (head[8] % 64);
        let (text, value) = written(integer, head[9], head[8]);
        let body = format!(r#"{{"to":"@hanako","amount":{text}}}"#);
        let read = json_body::<TransferIn>(body.as_bytes())
            .map(|b| b.amount)
            .ok();
        match value {
            // Plain integers read whatever their size; other forms up to 2^53.
            Some(value) if text == value.to_string() || value.unsigned_abs() <= 1 << 53 => {
                assert_eq!(read, Some(value), "{body}")
            }
            // Beyond 2^53 a float may not be exact: refused rather than rounded.
            Some(_) => assert_eq!(read, None, "{body}"),
            None => assert_eq!(read, None, "a fraction was read as an integer: {body}"),
        }
    }
});
