//! Rules as data: a TOML file of CEL expressions over the feature catalogue, checked once when
//! it is parsed, and `RuleSet::decide`, which runs every enabled rule on one event's features.

use std::fmt;
use std::sync::Arc;

use cel::common::types::{CelBool, CelInt, CelString};
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use sha2::{Digest, Sha256};

use crate::features::{self, Features, Value};
use crate::{Action, EventKind};

/// The rules Koban ships with; `RuleSet::default_rules` parses them.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

const NAME_CHARS_MAX: usize = 64;
const REASON_CHARS_MAX: usize = 40;
const WHEN_CHARS_MAX: usize = 2_000;
const SCORE_MAX: i64 = 1_000;
/// Parser and TOML messages are cut to this many characters, on one line.
const MESSAGE_CHARS_MAX: usize = 200;

/// Which party an alert from a rule is grouped under in a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseBy {
    /// The customer whose event it was (the default).
    Customer,
    /// The payee of the event: for mule rules, where many victims pay one account.
    Payee,
}

impl CaseBy {
    fn parse(s: &str) -> Option<CaseBy> {
        match s {
            "customer" => Some(CaseBy::Customer),
            "payee" => Some(CaseBy::Payee),
            _ => None,
        }
    }
}

/// Why a rules file was refused: the rule at fault (none for a problem of the whole file) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match &self.rule { Some(r) => format!("rule `{r}`: {}", self.problem), None => self.problem.clone() })]
pub struct RulesError {
    pub rule: Option<String>,
    pub problem: String,
}

impl RulesError {
    fn file(problem: impl Into<String>) -> RulesError {
        RulesError {
            rule: None,
            problem: problem.into(),
        }
    }

    fn rule(name: &str, problem: impl Into<String>) -> RulesError {
        RulesError {
            rule: Some(name.to_owned()),
            problem: problem.into(),
        }
    }
}

/// One checked rule. Its expression is compiled once, when the file is parsed.
pub struct Rule {
    pub name: String,
    pub description: String,
    pub when: String,
    pub action: Action,
    pub score: i64,
    pub reason: String,
    pub case_by: CaseBy,
    pub enabled: bool,
    /// The features the expression names.
    pub references: Vec<String>,
    /// The event kinds the rule can fire on: those for which the expression is not already
    /// false from `event` alone.
    pub kinds: Vec<EventKind>,
    program: cel::Program,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("when", &self.when)
            .field("action", &self.action)
            .field("score", &self.score)
            .field("reason", &self.reason)
            .field("case_by", &self.case_by)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A rule that fired on an event.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Fired {
    pub rule: String,
    pub action: Action,
    pub score: i64,
    pub reason: String,
    pub case_by: CaseBy,
}

/// The decision on one event.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The strictest action of the fired rules; `Allow` when none fired.
    pub action: Action,
    /// The sum of the fired rules' scores (saturating).
    pub score: i64,
    /// The fired rules, in file order.
    pub fired: Vec<Fired>,
    /// Rules whose evaluation failed on this event (an error, or a result that is not a
    /// bool); they count as not fired.
    pub errors: Vec<String>,
}

impl Verdict {
    /// Any fired rule raises an alert. This looks at every fired rule, not only at the final
    /// action: an alert rule that fires together with a stricter challenge still alerts.
    pub fn raises_alert(&self) -> bool {
        self.fired.iter().any(|f| f.action.raises_alert())
    }

    /// The fired rule with the strictest action, the first in file order on ties.
    pub fn strictest(&self) -> Option<&Fired> {
        let mut best: Option<&Fired> = None;
        for fired in &self.fired {
            if best.is_none_or(|b| fired.action > b.action) {
                best = Some(fired);
            }
        }
        best
    }
}

/// A checked rules file: its rules in file order, its version and fingerprint.
///
/// `Send + Sync`: `cel::Program` and `cel::Env` are both, so one set is shared behind an `Arc`
/// and every decision builds only its own small evaluation context.
pub struct RuleSet {
    rules: Vec<Rule>,
    version: String,
    digest: String,
    env: Arc<cel::Env>,
    /// Per event kind (in `EventKind::ALL` order): the features any rule that can fire on
    /// it names, so callers compute only those.
    needs: Vec<std::collections::BTreeSet<String>>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<String>,
    #[serde(default)]
    rule: Vec<toml::Table>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    description: String,
    when: String,
    action: String,
    #[serde(default)]
    score: i64,
    reason: String,
    case: Option<String>,
    enabled: Option<bool>,
}

impl RuleSet {
    /// Parses and checks a rules file; see `RULES.md` for the format.
    pub fn parse(toml_text: &str) -> Result<RuleSet, RulesError> {
        let raw: RawFile = toml::from_str(toml_text).map_err(|e| {
            let at = e
                .span()
                .map(|span| format!(" at line {}", line_of(toml_text, span.start)))
                .unwrap_or_default();
            RulesError::file(format!("invalid rules file{at}: {}", one_line(e.message())))
        })?;
        if raw.rule.is_empty() {
            return Err(RulesError::file("the file has no [[rule]]"));
        }
        let env = Arc::new(cel::Env::stdlib());
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
        for (at, table) in raw.rule.into_iter().enumerate() {
            let rule = check_rule(&env, at, table)?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(RulesError::rule(&rule.name, "duplicate name"));
            }
            rules.push(rule);
        }
        let needs = needs_of(&rules);
        Ok(RuleSet {
            rules,
            version: raw.version.unwrap_or_default(),
            digest: hex_sha256(toml_text),
            env,
            needs,
        })
    }

    /// The features the rules that can fire on `kind` name (enabled rules only).
    pub fn needs(&self, kind: EventKind) -> &std::collections::BTreeSet<String> {
        let at = EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.needs[at]
    }

    /// The rules Koban ships with (`DEFAULT_RULES`).
    pub fn default_rules() -> RuleSet {
        match RuleSet::parse(DEFAULT_RULES) {
            Ok(set) => set,
            // The shipped file is checked by a unit test, so this is a build defect.
            Err(e) => panic!("the default rules do not parse: {e}"),
        }
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The file's `version`, empty when it has none.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The SHA-256 of the source text, in hex: a stable fingerprint of the set.
    pub fn digest(&self) -> String {
        self.digest.clone()
    }

    /// The same set with the named rules disabled, and a digest that says so. For benchmarks
    /// that drive one card or customer far beyond any real one; an unknown name is an error.
    pub fn without(mut self, names: &[&str]) -> Result<RuleSet, RulesError> {
        for name in names {
            match self.rules.iter_mut().find(|r| r.name == *name) {
                Some(rule) => rule.enabled = false,
                None => {
                    return Err(RulesError {
                        rule: Some((*name).to_owned()),
                        problem: "there is no rule of this name to disable".to_owned(),
                    });
                }
            }
        }
        self.needs = needs_of(&self.rules);
        self.digest = hex_sha256(&format!("{} without {}", self.digest, names.join(",")));
        Ok(self)
    }

    /// Runs every enabled rule on `features`.
    pub fn decide(&self, features: &Features) -> Verdict {
        let vars = Vars { features };
        let mut context = cel::Context::with_env(Arc::clone(&self.env));
        context.set_variable_resolver(&vars);
        let mut verdict = Verdict {
            action: Action::Allow,
            score: 0,
            fired: Vec::new(),
            errors: Vec::new(),
        };
        let kind = features.event();
        for rule in self
            .rules
            .iter()
            .filter(|r| r.enabled && r.kinds.contains(&kind))
        {
            match rule.program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {
                    verdict.action = verdict.action.max(rule.action);
                    verdict.score = verdict.score.saturating_add(rule.score);
                    verdict.fired.push(Fired {
                        rule: rule.name.clone(),
                        action: rule.action,
                        score: rule.score,
                        reason: rule.reason.clone(),
                        case_by: rule.case_by,
                    });
                }
                Ok(cel::Value::Bool(false)) => {}
                // Checked at parse time to yield a bool on default features; a failure here
                // (an overflow, a division by zero) is reported, and the rule did not fire.
                Ok(_) | Err(_) => verdict.errors.push(rule.name.clone()),
            }
        }
        verdict
    }
}

/// Checks the rule at position `at` (from 0) of the file.
fn check_rule(env: &Arc<cel::Env>, at: usize, table: toml::Table) -> Result<Rule, RulesError> {
    let Some(name) = table
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
    else {
        return Err(RulesError::file(format!(
            "rule {} has no `name` string",
            at + 1
        )));
    };
    let raw: RawRule = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| RulesError::rule(&name, one_line(e.message())))?;
    let fail = |problem: String| RulesError::rule(&name, problem);
    if !valid_token(&raw.name, NAME_CHARS_MAX, true) {
        return Err(fail(format!(
            "bad name: use 1 to {NAME_CHARS_MAX} characters of a-z, 0-9, `_` and `.`"
        )));
    }
    if raw.description.trim().is_empty() {
        return Err(fail("the description is empty".to_owned()));
    }
    let action = Action::parse(&raw.action).ok_or_else(|| {
        fail(format!(
            "unknown action `{}`: use allow, alert, challenge, hold or deny",
            raw.action
        ))
    })?;
    let case = raw.case.as_deref().unwrap_or("customer");
    let case_by = CaseBy::parse(case)
        .ok_or_else(|| fail(format!("unknown case `{case}`: use customer or payee")))?;
    if !(0..=SCORE_MAX).contains(&raw.score) {
        return Err(fail(format!(
            "score {} is out of range 0..={SCORE_MAX}",
            raw.score
        )));
    }
    if !valid_token(&raw.reason, REASON_CHARS_MAX, false) {
        return Err(fail(format!(
            "bad reason: use 1 to {REASON_CHARS_MAX} characters of a-z, 0-9 and `_`"
        )));
    }
    let program = compile_when(env, &raw.when).map_err(fail)?;
    let mut references: Vec<String> = program
        .references()
        .variables()
        .into_iter()
        .map(str::to_owned)
        .collect();
    references.sort_unstable();
    let kinds = EventKind::ALL
        .into_iter()
        .filter(|kind| can_fire_on(env, &program, *kind))
        .collect();
    Ok(Rule {
        name: raw.name,
        description: raw.description,
        when: raw.when,
        action,
        score: raw.score,
        reason: raw.reason,
        case_by,
        enabled: raw.enabled.unwrap_or(true),
        references,
        kinds,
        program,
    })
}

/// False when the expression is already false knowing only that the event is of `kind`
/// (for example `event == "p2p" && ...` on a login): evaluated with every other feature
/// unknown, which `&&` never needs after a false left side. Anything else, including an
/// error, counts as "can fire".
fn can_fire_on(env: &Arc<cel::Env>, program: &cel::Program, kind: EventKind) -> bool {
    let only = EventOnly(kind);
    let mut context = cel::Context::with_env(Arc::clone(env));
    context.set_variable_resolver(&only);
    !matches!(program.execute(&context), Ok(cel::Value::Bool(false)))
}

/// Knows the event kind and nothing else.
struct EventOnly(EventKind);

impl VariableResolver for EventOnly {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        (variable == "event").then(|| CowVal::owned(CelString::from(self.0.as_str())))
    }
}

fn needs_of(rules: &[Rule]) -> Vec<std::collections::BTreeSet<String>> {
    EventKind::ALL
        .into_iter()
        .map(|kind| {
            rules
                .iter()
                .filter(|r| r.enabled && r.kinds.contains(&kind))
                .flat_map(|r| r.references.iter().cloned())
                .collect()
        })
        .collect()
}

/// Compiles a `when` expression and checks that it names only catalogued features and yields
/// a bool on the default features of every event kind.
fn compile_when(env: &Arc<cel::Env>, when: &str) -> Result<cel::Program, String> {
    let chars = when.chars().count();
    if chars > WHEN_CHARS_MAX {
        return Err(format!(
            "the expression is {chars} characters long, more than {WHEN_CHARS_MAX}"
        ));
    }
    let program = env.compile(when).map_err(|e| match e.errors.first() {
        Some(first) => format!(
            "the expression does not compile: {}:{}: {}",
            first.pos.0,
            first.pos.1,
            one_line(&first.msg)
        ),
        None => format!(
            "the expression does not compile: {}",
            one_line(&e.to_string())
        ),
    })?;
    let references = program.references();
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| features::index_of(v).is_none())
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let list = unknown
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!("unknown feature {list}"));
    }
    for kind in EventKind::ALL {
        let features = Features::new(kind);
        let vars = Vars {
            features: &features,
        };
        let mut context = cel::Context::with_env(Arc::clone(env));
        context.set_variable_resolver(&vars);
        match program.execute(&context) {
            Ok(cel::Value::Bool(_)) => {}
            Ok(other) => {
                return Err(format!(
                    "the expression yields {}, not a bool, on a default `{}` event",
                    type_name(&other),
                    kind.as_str()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "the expression fails on a default `{}` event: {}",
                    kind.as_str(),
                    one_line(&e.to_string())
                ));
            }
        }
    }
    Ok(program)
}

/// Gives CEL the features by name, without copying them into the context.
struct Vars<'a> {
    features: &'a Features,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let at = features::index_of(variable)?;
        Some(match &self.features.values()[at] {
            Value::Int(i) => CowVal::owned(CelInt::from(*i)),
            Value::Bool(b) => CowVal::owned(CelBool::from(*b)),
            Value::Text(s) => CowVal::owned(CelString::from(s.as_str())),
        })
    }
}

fn type_name(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::Int(_) => "an int",
        cel::Value::UInt(_) => "a uint",
        cel::Value::Float(_) => "a double",
        cel::Value::String(_) => "a string",
        cel::Value::Null => "null",
        cel::Value::List(_) => "a list",
        cel::Value::Map(_) => "a map",
        _ => "a value",
    }
}

/// `s` is 1 to `max` characters of `[a-z0-9_]`, and `.` when `dots`.
fn valid_token(s: &str, max: usize, dots: bool) -> bool {
    let len = s.chars().count();
    (1..=max).contains(&len)
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (dots && c == '.'))
}

/// The first line of `s`, trimmed and cut to `MESSAGE_CHARS_MAX` characters.
fn one_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(MESSAGE_CHARS_MAX).collect()
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
