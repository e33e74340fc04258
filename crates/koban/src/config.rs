//! The configuration file: one TOML file (`--config FILE` or `KOBAN_CONFIG`) whose keys are
//! the settings' long flag names (`listen = "0.0.0.0:8080"`, `smtp-url` or `smtp_url`). Each
//! value becomes that setting's default, so its `KOBAN_*` environment variable overrides the
//! file and the command line overrides both. The file holds no secrets: the master key and
//! passwords in URLs are refused in it (give them in the environment or in their own files).
//!
//! `koban config check` parses everything `serve` would, builds every part's settings without
//! starting anything, and prints each setting with where its value came from, secrets masked.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, CommandFactory, FromArgMatches};

use crate::cli::{Cli, ServeArgs};

/// Settings that are secrets: never accepted from the file, always masked when printed.
const SECRET_SETTINGS: &[&str] = &["master-key"];
/// Settings the file cannot hold: the file itself.
const NOT_IN_FILE: &[&str] = &["config"];
/// Settings whose URL may carry a password (refused in the file, masked when printed).
const URL_SETTINGS: &[&str] = &["database-url", "smtp-url"];

/// The file named by `--config FILE`, `--config=FILE` or `KOBAN_CONFIG`, if any.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--" {
            break;
        }
        if word == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("KOBAN_CONFIG").map(PathBuf::from)
}

/// One setting's value as its flag would take it.
fn flag_value(key: &str, value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| flag_value(key, item))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        _ => bail!("{key}: a setting is a string, number, true/false or a list"),
    })
}

/// Reads the file into (long flag name, value), checking every key names a setting and no
/// secret is in it.
fn read_file(
    path: &Path,
    known: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid TOML: {}", path.display(), e.message()))?;
    let mut settings = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if SECRET_SETTINGS.contains(&name.as_str()) {
            bail!(
                "{}: {key} is a secret and is not read from the configuration file; give it in the environment ({}) or its own file",
                path.display(),
                known.get(&name).map_or("KOBAN_...", String::as_str)
            );
        }
        if !known.contains_key(&name) || NOT_IN_FILE.contains(&name.as_str()) {
            bail!(
                "{}: {key} is not a setting (see `koban serve --help`)",
                path.display()
            );
        }
        let value = flag_value(&key, &value).with_context(|| path.display().to_string())?;
        if URL_SETTINGS.contains(&name.as_str()) && crate::backend::url_has_secret(&value) {
            bail!(
                "{}: {key} holds a password; give the URL in the environment ({}) or the password in its own file",
                path.display(),
                known[&name]
            );
        }
        settings.push((name, value));
    }
    Ok(settings)
}

/// Every long flag with an environment variable, in every command: name -> variable.
fn known_settings(command: &Command, known: &mut BTreeMap<String, String>) {
    for arg in command.get_arguments() {
        if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
            known.insert(long.to_owned(), env.to_string_lossy().into_owned());
        }
    }
    for sub in command.get_subcommands() {
        known_settings(sub, known);
    }
}

/// Makes each file setting the default of its flag, in every command that has it.
fn with_defaults(mut command: Command, settings: &[(String, String)]) -> Command {
    let ids: Vec<(clap::Id, &'static str)> = command
        .get_arguments()
        .filter_map(|arg| {
            // Only settings (flags with a `KOBAN_*` variable): a bench's own --database-url,
            // say, keeps its temporary default.
            arg.get_env()?;
            let long = arg.get_long()?;
            let (_, value) = settings.iter().find(|(name, _)| name == long)?;
            // Leaked once at start: a command's defaults live as long as the process.
            Some((
                arg.get_id().clone(),
                &*Box::leak(value.clone().into_boxed_str()),
            ))
        })
        .collect();
    for (id, value) in ids {
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    let subs: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subs {
        command = command.mut_subcommand(name, |sub| with_defaults(sub, settings));
    }
    command
}

/// The file's settings as read, and the parsed command line, kept for `koban config check`.
/// No `Debug`: the parsed command line holds the environment's values, secrets included.
#[derive(Clone, Default)]
pub struct FileSettings {
    pub path: Option<PathBuf>,
    pub settings: Vec<(String, String)>,
    matches: Option<ArgMatches>,
}

/// Parses the command line with the configuration file's settings as defaults.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<(Cli, FileSettings)> {
    let mut command = Cli::command();
    let mut file = FileSettings {
        path: config_path(&args),
        ..FileSettings::default()
    };
    if let Some(path) = &file.path {
        let mut known = BTreeMap::new();
        known_settings(&command, &mut known);
        file.settings = read_file(path, &known)?;
        command = with_defaults(command, &file.settings);
    }
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    file.matches = Some(matches);
    Ok((cli, file))
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Every setting of `serve` with its value (secrets masked) and where it came from.
fn effective(file: &FileSettings) -> Vec<(String, String, &'static str)> {
    let command = Cli::command();
    let Some(check) = command
        .find_subcommand("config")
        .and_then(|c| c.find_subcommand("check"))
    else {
        return Vec::new();
    };
    let Some(matches) = file
        .matches
        .as_ref()
        .and_then(|m| m.subcommand_matches("config"))
        .and_then(|m| m.subcommand_matches("check"))
    else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for arg in check.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "json" | "help" | "config") {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if file.settings.iter().any(|(n, _)| n == long) => {
                "file"
            }
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if raw.is_empty() {
            String::new()
        } else if SECRET_SETTINGS.contains(&long)
            || arg.is_hide_env_values_set() && !URL_SETTINGS.contains(&long)
        {
            "[redacted]".to_owned()
        } else if URL_SETTINGS.contains(&long) {
            crate::backend::redact_url(&raw.join(","))
        } else {
            raw.join(",")
        };
        rows.push((long.to_owned(), value, source));
    }
    rows
}

/// `koban config check`: builds every part's settings as `serve` would, without starting.
pub fn check(args: CheckArgs, file: &FileSettings) -> anyhow::Result<ExitCode> {
    let serve = &args.serve;
    let mut problems = Vec::new();
    let mut note = |what: &str, result: anyhow::Result<()>| {
        if let Err(error) = result {
            problems.push(format!("{what}: {error:#}"));
        }
    };
    note(
        "database-url",
        crate::backend::Backend::of(serve.database.database_url.expose()).map(|_| ()),
    );
    note(
        "identity",
        serve
            .identity
            .config(serve.dev, Some(serve.listen))
            .map(|_| ()),
    );
    note("payments", serve.payments.config(serve.dev).map(|_| ()));
    note("cards", serve.payments.card_config().map(|_| ()));
    note("tls-ca-file", serve.identity.tls_ca_pem().map(|_| ()));
    note(
        "risk-rules",
        koban_pay::RiskRules::load(serve.payments.risk_rules.as_deref())
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e}")),
    );
    let rows = effective(file);
    let ok = problems.is_empty();
    if args.json {
        let settings: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, value, source)| {
                (
                    name.clone(),
                    serde_json::json!({ "value": value, "source": source }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "ok": ok,
                "config_file": file.path.as_ref().map(|p| p.display().to_string()),
                "problems": problems,
                "settings": settings,
            })
        );
    } else {
        if let Some(path) = &file.path {
            println!("configuration file: {}", path.display());
        }
        let width = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (name, value, source) in &rows {
            println!("{name:width$}  {value}  ({source})");
        }
        if ok {
            println!("OK: every setting is valid");
        }
        for problem in &problems {
            println!("PROBLEM: {problem}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
