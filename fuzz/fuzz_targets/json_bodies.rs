//! JSON bodies of the money-moving endpoints, read as the server reads them
//! (`koban_api::extract::json_value`). Properties: any bytes are read or refused, never a
//! panic; only an object is read; an amount that reads is the integer the JSON wrote (`1200`,
//! `1200.0` or `1.2e3`), never a rounded fraction; a refusal's message never repeats a value
//! from the body (it may name a field).
#![no_main]

use koban_api::extract::json_value;
use koban_api::payments::{BankMoveIn, ChargeIn, FaucetIn, PaymentRequestIn, RefundIn, TransferIn};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A JSON number as the integer it equals, if it does.
fn whole(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let float = value.as_f64()?;
        (float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0).then_some(float as i64)
    })
}

fn check<T: serde::de::DeserializeOwned>(value: &Value, amount: impl Fn(&T) -> i64) {
    match json_value::<T>(value.clone()) {
        Ok(body) => {
            assert!(value.is_object(), "only an object is a body: {value}");
            assert_eq!(Some(amount(&body)), whole(&value["amount"]), "{value}");
        }
        Err(error) => {
            // The refusal says the same whatever the strings in the body hold: it names
            // fields (`unknown field `amout``), never repeats a value.
            let masked = json_value::<T>(masked(value)).err();
            assert_eq!(
                Some(format!("{error:?}")),
                masked.map(|e| format!("{e:?}")),
                "a refusal depends on a value: {value}"
            );
        }
    }
}

/// The body with every string value replaced by as many `z`s (keys kept).
fn masked(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String("z".repeat(text.chars().count())),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), masked(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check::<TransferIn>(&value, |b| b.amount);
    check::<FaucetIn>(&value, |b| b.amount);
    check::<BankMoveIn>(&value, |b| b.amount);
    check::<PaymentRequestIn>(&value, |b| b.amount);
    check::<ChargeIn>(&value, |b| b.amount);
    check::<RefundIn>(&value, |b| b.amount);
});
