//! The feature catalogue: every value a rule may look at, with its type and meaning, and
//! `Features`, one event's values for all of them.
//!
//! The catalogue is the contract between the callers (which gather the values from the
//! database) and the rules (which read them). A rule may only name a catalogued feature; a
//! recorded event keeps its features as JSON so it can be replayed under a later catalogue.

use std::sync::LazyLock;

use crate::{EventKind, NEVER_S};

/// One feature's value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Text(String),
}

/// The type of a catalogued feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureType {
    Int,
    Bool,
    Text,
}

impl FeatureType {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureType::Int => "int",
            FeatureType::Bool => "bool",
            FeatureType::Text => "text",
        }
    }
}

/// A catalogued feature: its name as rules write it, its type, and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureDef {
    pub name: &'static str,
    pub ty: FeatureType,
    pub doc: &'static str,
}

/// Age-like features whose default is `NEVER_S`: with nothing to measure, "long ago" is the
/// value that makes no age rule fire.
const NEVER_DEFAULT: &[&str] = &[
    "device_age_s",
    "since_credential_change_s",
    "payee_age_s",
    "source_age_s",
    "since_topup_s",
];

impl FeatureDef {
    /// The value the feature has in `Features::new`.
    pub fn default_value(&self) -> Value {
        match self.ty {
            FeatureType::Int if NEVER_DEFAULT.contains(&self.name) => Value::Int(NEVER_S),
            FeatureType::Int => Value::Int(0),
            FeatureType::Bool => Value::Bool(false),
            FeatureType::Text => Value::Text(String::new()),
        }
    }
}

const fn int(name: &'static str, doc: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        ty: FeatureType::Int,
        doc,
    }
}

const fn boolean(name: &'static str, doc: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        ty: FeatureType::Bool,
        doc,
    }
}

const fn text(name: &'static str, doc: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        ty: FeatureType::Text,
        doc,
    }
}

/// The six window features of one dimension: count and sum over 1 minute, 1 hour, 24 hours.
macro_rules! windows {
    ($dim:literal, $who:literal) => {
        [
            int(
                concat!($dim, "_count_1m"),
                concat!("Earlier same-kind events ", $who, " in the last minute."),
            ),
            int(
                concat!($dim, "_sum_1m"),
                concat!(
                    "Sum of the amounts of the earlier same-kind events ",
                    $who,
                    " in the last minute."
                ),
            ),
            int(
                concat!($dim, "_count_1h"),
                concat!("Earlier same-kind events ", $who, " in the last hour."),
            ),
            int(
                concat!($dim, "_sum_1h"),
                concat!(
                    "Sum of the amounts of the earlier same-kind events ",
                    $who,
                    " in the last hour."
                ),
            ),
            int(
                concat!($dim, "_count_24h"),
                concat!("Earlier same-kind events ", $who, " in the last 24 hours."),
            ),
            int(
                concat!($dim, "_sum_24h"),
                concat!(
                    "Sum of the amounts of the earlier same-kind events ",
                    $who,
                    " in the last 24 hours."
                ),
            ),
        ]
    };
}

const HEAD: [FeatureDef; 10] = [
    text(
        "event",
        "The event kind: login, funding_link, topup, p2p, merchant_payment, code_charge, payout, card_authorization.",
    ),
    int(
        "amount",
        "The amount in minor units; 0 for login and funding_link.",
    ),
    text("currency", "The ISO 4217 currency code of the amount."),
    boolean(
        "failed",
        "This attempt failed (wrong password at login, wrong code at funding link); false for money events.",
    ),
    int(
        "customer_age_s",
        "Seconds since the customer's account was created.",
    ),
    boolean(
        "customer_verified",
        "The customer is on a KYC-verified tier.",
    ),
    boolean(
        "device_known",
        "The client presented this customer's device cookie, issued at a past successful sign-in.",
    ),
    int(
        "device_age_s",
        "Seconds since that device was first seen for this customer; NEVER_S when unknown.",
    ),
    int(
        "since_credential_change_s",
        "Seconds since the last password, contact or factor change; NEVER_S when none.",
    ),
    boolean(
        "in_cooling_off",
        "Inside the cooling-off period after a credential, contact or factor change.",
    ),
];

const CUSTOMER: [FeatureDef; 6] = windows!("customer", "by this customer");
const DEVICE: [FeatureDef; 6] = windows!("device", "from this device");
const NETWORK: [FeatureDef; 6] = windows!(
    "network",
    "from this client network (IPv4 /24 or IPv6 /64), any account"
);
const PAYEE: [FeatureDef; 6] = windows!("payee", "paying this payee, from anyone");
const SOURCE: [FeatureDef; 6] = windows!("source", "using this funding source");

const TAIL: [FeatureDef; 18] = [
    int(
        "customer_failures_1h",
        "Failed same-kind events of this customer in the last hour.",
    ),
    int(
        "device_failures_1h",
        "Failed same-kind events from this device in the last hour.",
    ),
    int(
        "network_failures_1h",
        "Failed same-kind events from this network in the last hour, across all accounts.",
    ),
    int(
        "payee_failures_1h",
        "Failed same-kind events with this payee in the last hour (wrong payment codes a merchant tried).",
    ),
    int(
        "network_customers_1h",
        "Distinct customers with same-kind events from this network in the last hour.",
    ),
    boolean("payee_new", "The payer never paid this payee before."),
    int(
        "payee_age_s",
        "Age of the payee's account in seconds; NEVER_S when there is no payee.",
    ),
    int(
        "payee_senders_1h",
        "Distinct customers who paid this payee (P2P) in the last hour.",
    ),
    int(
        "source_age_s",
        "Seconds since the funding source was verified; NEVER_S when there is none.",
    ),
    int(
        "since_topup_s",
        "Seconds since the customer's last top-up; NEVER_S when none.",
    ),
    int(
        "last_topup_amount",
        "The amount of the customer's last top-up; 0 when none.",
    ),
    int(
        "global_login_failures_1m",
        "Failed logins of everyone in the last minute.",
    ),
    int(
        "global_login_failures_baseline",
        "The usual failed logins per minute: the average over the preceding hour.",
    ),
    text(
        "mcc",
        "The merchant category code (card authorizations only).",
    ),
    text(
        "merchant_country",
        "The merchant's country (card authorizations only).",
    ),
    int(
        "step_up_from",
        "Configured: amounts from which an outgoing movement needs step-up.",
    ),
    int(
        "review_new_payee_from",
        "Configured: amounts from which a payment to a new payee is held for review.",
    ),
    int(
        "fan_in_senders_max",
        "Configured: distinct senders in an hour from which a young payee's in-flow is held.",
    ),
];

const FEATURE_COUNT: usize = 58;

static CATALOGUE: [FeatureDef; FEATURE_COUNT] = {
    let parts: [&[FeatureDef]; 7] = [&HEAD, &CUSTOMER, &DEVICE, &NETWORK, &PAYEE, &SOURCE, &TAIL];
    let mut all = [HEAD[0]; FEATURE_COUNT];
    let mut at = 0;
    let mut p = 0;
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            all[at] = parts[p][i];
            at += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(at == FEATURE_COUNT);
    all
};

/// The catalogue, in its documented order.
pub static FEATURES: &[FeatureDef] = &CATALOGUE;

/// Catalogue names sorted, with their positions: looked up by binary search, no hashing.
static BY_NAME: LazyLock<Vec<(&'static str, usize)>> = LazyLock::new(|| {
    let mut names: Vec<(&'static str, usize)> = FEATURES
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name, i))
        .collect();
    names.sort_unstable();
    names
});

static DEFAULTS: LazyLock<Vec<Value>> =
    LazyLock::new(|| FEATURES.iter().map(FeatureDef::default_value).collect());

/// The catalogue position of `name`.
pub(crate) fn index_of(name: &str) -> Option<usize> {
    BY_NAME
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|at| BY_NAME[at].1)
}

/// One event's value for every catalogued feature.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    event: EventKind,
    /// Indexed by catalogue position; always `FEATURES.len()` long, each of its feature's type.
    values: Vec<Value>,
}

impl Features {
    /// Every feature at its default, and `event` set.
    pub fn new(event: EventKind) -> Features {
        let mut values = DEFAULTS.clone();
        values[0] = Value::Text(event.as_str().to_owned());
        Features { event, values }
    }

    pub fn event(&self) -> EventKind {
        self.event
    }

    /// Sets an int feature.
    ///
    /// # Panics
    /// On a name not in the catalogue or not of type int: a programming error in the caller.
    pub fn set_int(&mut self, name: &str, v: i64) {
        let at = Self::slot(name, FeatureType::Int);
        self.values[at] = Value::Int(v);
    }

    /// Sets a bool feature. Panics like `set_int`.
    pub fn set_bool(&mut self, name: &str, v: bool) {
        let at = Self::slot(name, FeatureType::Bool);
        self.values[at] = Value::Bool(v);
    }

    /// Sets a text feature. Panics like `set_int`; setting `event` to something that is not
    /// an event kind panics too, as the kind and its text must agree.
    pub fn set_text(&mut self, name: &str, v: &str) {
        let at = Self::slot(name, FeatureType::Text);
        if at == 0 {
            match EventKind::parse(v) {
                Some(kind) => self.event = kind,
                None => panic!("feature `event`: `{v}` is not an event kind"),
            }
        }
        match &mut self.values[at] {
            Value::Text(s) => {
                s.clear();
                s.push_str(v);
            }
            other => *other = Value::Text(v.to_owned()),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        index_of(name).map(|at| &self.values[at])
    }

    /// The values in catalogue order.
    pub(crate) fn values(&self) -> &[Value] {
        &self.values
    }

    /// An object of every feature's name and value.
    pub fn to_json(&self) -> serde_json::Value {
        let map = FEATURES
            .iter()
            .zip(&self.values)
            .map(|(def, v)| {
                let json = match v {
                    Value::Int(i) => serde_json::Value::from(*i),
                    Value::Bool(b) => serde_json::Value::from(*b),
                    Value::Text(s) => serde_json::Value::from(s.as_str()),
                };
                (def.name.to_owned(), json)
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// Reads what `to_json` wrote. Names not in the catalogue are ignored and missing ones
    /// take their default, so a record made under an older catalogue replays under a newer
    /// one; `event` is required, and a value of the wrong type is an error naming the feature.
    pub fn from_json(v: &serde_json::Value) -> Result<Features, String> {
        let object = v
            .as_object()
            .ok_or_else(|| "features: expected a JSON object".to_owned())?;
        let event = object
            .get("event")
            .ok_or_else(|| "feature `event`: missing".to_owned())?;
        let kind = event
            .as_str()
            .and_then(EventKind::parse)
            .ok_or_else(|| format!("feature `event`: `{event}` is not an event kind"))?;
        let mut features = Features::new(kind);
        for (at, def) in FEATURES.iter().enumerate().skip(1) {
            let Some(json) = object.get(def.name) else {
                continue;
            };
            let value = match def.ty {
                FeatureType::Int => json.as_i64().map(Value::Int),
                FeatureType::Bool => json.as_bool().map(Value::Bool),
                FeatureType::Text => json.as_str().map(|s| Value::Text(s.to_owned())),
            };
            features.values[at] = value.ok_or_else(|| {
                format!(
                    "feature `{}`: expected {}, found `{json}`",
                    def.name,
                    def.ty.as_str()
                )
            })?;
        }
        Ok(features)
    }

    fn slot(name: &str, ty: FeatureType) -> usize {
        let Some(at) = index_of(name) else {
            panic!("feature `{name}` is not in the catalogue");
        };
        let def = &FEATURES[at];
        assert!(
            def.ty == ty,
            "feature `{name}` is {}, not {}",
            def.ty.as_str(),
            ty.as_str()
        );
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_has_unique_names_in_the_documented_order() {
        assert_eq!(FEATURES.len(), FEATURE_COUNT);
        assert_eq!(FEATURES[0].name, "event");
        assert_eq!(FEATURES[10].name, "customer_count_1m");
        assert_eq!(FEATURES[15].name, "customer_sum_24h");
        assert_eq!(FEATURES[39].name, "source_sum_24h");
        assert_eq!(FEATURES[40].name, "customer_failures_1h");
        assert_eq!(FEATURES[43].name, "payee_failures_1h");
        assert_eq!(FEATURES[57].name, "fan_in_senders_max");
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len());
        for (at, def) in FEATURES.iter().enumerate() {
            assert_eq!(index_of(def.name), Some(at));
            assert!(!def.doc.is_empty());
        }
        assert_eq!(index_of("nope"), None);
    }

    #[test]
    fn new_features_have_their_defaults() {
        let f = Features::new(EventKind::P2p);
        assert_eq!(f.event(), EventKind::P2p);
        assert_eq!(f.get("event"), Some(&Value::Text("p2p".into())));
        assert_eq!(f.get("amount"), Some(&Value::Int(0)));
        assert_eq!(f.get("payee_age_s"), Some(&Value::Int(NEVER_S)));
        assert_eq!(f.get("since_topup_s"), Some(&Value::Int(NEVER_S)));
        assert_eq!(f.get("customer_age_s"), Some(&Value::Int(0)));
        assert_eq!(f.get("payee_new"), Some(&Value::Bool(false)));
        assert_eq!(f.get("mcc"), Some(&Value::Text(String::new())));
        assert_eq!(f.get("unknown"), None);
    }

    #[test]
    fn json_round_trips() {
        let mut f = Features::new(EventKind::CardAuthorization);
        f.set_int("amount", 12_345);
        f.set_bool("device_known", true);
        f.set_text("mcc", "5999");
        f.set_int("payee_age_s", -3);
        let json = f.to_json();
        assert_eq!(json["amount"], serde_json::json!(12_345));
        assert_eq!(json["event"], serde_json::json!("card_authorization"));
        assert_eq!(Features::from_json(&json), Ok(f));
    }

    #[test]
    fn json_ignores_unknown_names_and_defaults_missing_ones() {
        let json = serde_json::json!({"event": "topup", "amount": 7, "retired_feature": "x"});
        let f = Features::from_json(&json).unwrap();
        assert_eq!(f.event(), EventKind::Topup);
        assert_eq!(f.get("amount"), Some(&Value::Int(7)));
        assert_eq!(f.get("device_age_s"), Some(&Value::Int(NEVER_S)));
    }

    #[test]
    fn json_refuses_a_wrong_type_naming_the_feature() {
        let json = serde_json::json!({"event": "p2p", "payee_new": 1});
        let err = Features::from_json(&json).unwrap_err();
        assert!(err.contains("`payee_new`") && err.contains("bool"), "{err}");
        let json = serde_json::json!({"event": "teleport"});
        assert!(Features::from_json(&json).unwrap_err().contains("`event`"));
        assert!(Features::from_json(&serde_json::json!({"amount": 1})).is_err());
    }

    #[test]
    fn setting_event_text_keeps_the_kind_in_step() {
        let mut f = Features::new(EventKind::Login);
        f.set_text("event", "payout");
        assert_eq!(f.event(), EventKind::Payout);
        assert_eq!(f.get("event"), Some(&Value::Text("payout".into())));
    }

    #[test]
    #[should_panic(expected = "not in the catalogue")]
    fn setting_an_unknown_feature_panics() {
        Features::new(EventKind::Login).set_int("no_such_feature", 1);
    }

    #[test]
    #[should_panic(expected = "is bool, not int")]
    fn setting_the_wrong_type_panics() {
        Features::new(EventKind::Login).set_int("failed", 1);
    }
}
