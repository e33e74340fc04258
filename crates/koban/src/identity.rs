//! Identity settings on the command line, the server's master key, and the commands
//! `koban admin create` and `koban audit verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use koban_auth::{Auth, AuthConfig, Email, Role, ServerKeys};
use koban_store::{Clock, LedgerStore};

use crate::backend::WithStore;
use crate::cli::DatabaseArgs;

/// Where the master key is kept when none is given and the database is not a local file.
pub const DEFAULT_MASTER_KEY_FILE: &str = "./koban-data/master.key";

/// A master key given as text; its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKeyText(String);

impl std::str::FromStr for MasterKeyText {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<MasterKeyText, Self::Err> {
        Ok(MasterKeyText(text.to_owned()))
    }
}

impl std::fmt::Debug for MasterKeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// The 32-byte master key as 64 hex digits; every instance must share it. Prefer the
    /// environment variable or the file over the command line.
    #[arg(long, env = "KOBAN_MASTER_KEY", hide_env_values = true, hide = true)]
    pub master_key: Option<MasterKeyText>,
    /// A file holding the master key (64 hex digits); created with a fresh key if missing.
    /// Default: `master.key` beside the SQLite database, or ./koban-data/master.key.
    #[arg(long, env = "KOBAN_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The public base URL: links sent by e-mail start with it, and its host name is the
    /// WebAuthn relying party (passkeys need a name, not an IP address). Default for `serve`:
    /// http://localhost:PORT with the port it listens on (the address itself instead of
    /// localhost when it listens on one address that is not loopback); for other commands
    /// http://localhost:8080.
    #[arg(long, env = "KOBAN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// After this many times its usual per-minute rate of failed sign-ins, raise an alert.
    #[arg(long, env = "KOBAN_ALARM_MULTIPLE", default_value_t = 10)]
    pub alarm_multiple: i64,
    /// The smallest per-minute baseline the alarm compares against.
    #[arg(long, env = "KOBAN_ALARM_FLOOR_PER_MIN", default_value_t = 20)]
    pub alarm_floor_per_min: i64,
    /// Hours after a contact, factor or password change (or a recovery) in which outgoing
    /// money is limited.
    #[arg(long, env = "KOBAN_COOLING_OFF_H", default_value_t = 24)]
    pub cooling_off_h: i64,
    /// The most that may go out during cooling-off, in minor units.
    #[arg(long, env = "KOBAN_COOLING_OFF_LIMIT_MINOR", default_value_t = 10_000)]
    pub cooling_off_limit_minor: i64,
    /// Hours a recovery request waits before an operator may approve it.
    #[arg(long, env = "KOBAN_RECOVERY_WAIT_H", default_value_t = 72)]
    pub recovery_wait_h: i64,
    /// Minutes a session may sit idle before it ends.
    #[arg(long, env = "KOBAN_SESSION_IDLE_MIN", default_value_t = AuthConfig::default().session_idle_s / 60)]
    pub session_idle_min: i64,
    /// Hours a session lasts at most, however active.
    #[arg(long, env = "KOBAN_SESSION_ABSOLUTE_H", default_value_t = AuthConfig::default().session_absolute_s / 3600)]
    pub session_absolute_h: i64,
    /// Consecutive failed sign-ins on one account before each further attempt is delayed.
    #[arg(long, env = "KOBAN_ACCOUNT_DELAY_AFTER", default_value_t = AuthConfig::default().account_delay_after)]
    pub account_delay_after: i64,
    /// Consecutive failed sign-ins on one account that lock it (its owner is told by e-mail).
    #[arg(long, env = "KOBAN_ACCOUNT_LOCK_AFTER", default_value_t = AuthConfig::default().account_lock_after)]
    pub account_lock_after: i64,
    /// Minutes a locked account stays locked.
    #[arg(long, env = "KOBAN_ACCOUNT_LOCK_MIN", default_value_t = AuthConfig::default().account_lock_s / 60)]
    pub account_lock_min: i64,
    /// Failed sign-ins from one network (IPv4 /24, IPv6 /64) per throttle window before it is
    /// refused.
    #[arg(long, env = "KOBAN_NETWORK_FAILURES_MAX", default_value_t = AuthConfig::default().network_failures_max)]
    pub network_failures_max: i64,
    /// Failed sign-ins from one device cookie per throttle window before it is refused.
    #[arg(long, env = "KOBAN_DEVICE_FAILURES_MAX", default_value_t = AuthConfig::default().device_failures_max)]
    pub device_failures_max: i64,
    /// Minutes of the sign-in throttle window.
    #[arg(long, env = "KOBAN_THROTTLE_WINDOW_MIN", default_value_t = AuthConfig::default().window_s / 60)]
    pub throttle_window_min: i64,
    /// Distinct accounts one password may fail against before it is refused everywhere
    /// (password spraying).
    #[arg(long, env = "KOBAN_SPRAY_ACCOUNTS_MAX", default_value_t = AuthConfig::default().spray_accounts_max)]
    pub spray_accounts_max: i64,
    /// Sign-ups, password resets and recovery requests from one network per throttle window.
    #[arg(long, env = "KOBAN_REQUESTS_PER_NETWORK_MAX", default_value_t = AuthConfig::default().requests_per_network_max)]
    pub requests_per_network_max: i64,
    /// An SMTP relay for notifications: smtps://USER:PASSWORD@HOST:465 (TLS),
    /// smtp://USER:PASSWORD@HOST:587?tls=required (STARTTLS), or smtp://HOST:25 (plain, for a
    /// relay on this machine; no credentials). Give the password in the environment or with
    /// --smtp-password-file, not on the command line. Without a relay, messages go to the
    /// local mailbox.
    #[arg(long, env = "KOBAN_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// A file holding the SMTP password (one line); it replaces any password in the URL.
    #[arg(long, env = "KOBAN_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// Certificate authorities (PEM) trusted besides the system's roots, for the SMTP relay
    /// and merchants' webhook endpoints: an internal authority of yours.
    #[arg(long, env = "KOBAN_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// The sender of notifications.
    #[arg(
        long,
        env = "KOBAN_MAIL_FROM",
        default_value = "Koban <no-reply@koban.example>"
    )]
    pub mail_from: String,
}

/// The public URL a server listening on `listen` is reached at, by default: loopback and
/// unspecified addresses are `localhost` (a name, as passkeys need).
pub fn public_url_for(listen: std::net::SocketAddr) -> String {
    let ip = listen.ip();
    let host = if ip.is_loopback() || ip.is_unspecified() {
        "localhost".to_owned()
    } else {
        match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        }
    };
    format!("http://{host}:{}", listen.port())
}

impl IdentityArgs {
    /// The certificate authorities of --tls-ca-file, read and checked.
    pub fn tls_ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("--tls-ca-file {}: {e}", path.display()))?;
        koban_pay::outbound::tls_config(Some(&pem))
            .map_err(|e| anyhow::anyhow!("--tls-ca-file {}: {e}", path.display()))?;
        Ok(Some(pem))
    }

    fn smtp(&self) -> anyhow::Result<Option<koban_auth::outbox::SmtpConfig>> {
        let Some(url) = self.smtp_url.as_deref() else {
            return Ok(None);
        };
        let password = match &self.smtp_password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--smtp-password-file {}: {e}", path.display()))?;
                Some(koban_auth::Secret::new(
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
            None => None,
        };
        let mut smtp = koban_auth::outbox::SmtpConfig::parse(url, &self.mail_from, password)
            .map_err(|e| anyhow::anyhow!("--smtp-url/--mail-from: {e}"))?;
        smtp.ca_pem = self.tls_ca_pem()?;
        Ok(Some(smtp))
    }

    /// The identity settings; `listen` is where `serve` listens (the public URL's default).
    pub fn config(
        &self,
        dev: bool,
        listen: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<AuthConfig> {
        if self.alarm_multiple < 2 || self.alarm_floor_per_min < 1 {
            bail!("--alarm-multiple must be at least 2 and --alarm-floor-per-min at least 1");
        }
        if !(0..=24 * 30).contains(&self.cooling_off_h) || self.cooling_off_limit_minor < 0 {
            bail!("--cooling-off-h must be 0 to 720 and --cooling-off-limit-minor not negative");
        }
        if !(1..=24 * 30).contains(&self.recovery_wait_h) {
            bail!("--recovery-wait-h must be 1 to 720");
        }
        if !(1..=24 * 60).contains(&self.session_idle_min)
            || !(1..=24 * 30).contains(&self.session_absolute_h)
            || self.session_idle_min > self.session_absolute_h * 60
        {
            bail!(
                "--session-idle-min must be 1 to 1440 and --session-absolute-h 1 to 720, the idle time within the absolute one"
            );
        }
        if self.account_delay_after < 1
            || self.account_lock_after < self.account_delay_after
            || !(1..=24 * 60).contains(&self.account_lock_min)
        {
            bail!(
                "--account-delay-after must be at least 1, --account-lock-after at least that, and --account-lock-min 1 to 1440"
            );
        }
        if self.network_failures_max < 1
            || self.device_failures_max < 1
            || self.spray_accounts_max < 1
            || self.requests_per_network_max < 1
            || !(1..=24 * 60).contains(&self.throttle_window_min)
        {
            bail!("the throttle limits must be at least 1, and --throttle-window-min 1 to 1440");
        }
        Ok(AuthConfig {
            public_url: match (&self.public_url, listen) {
                (Some(url), _) => url.trim_end_matches('/').to_owned(),
                (None, Some(listen)) => public_url_for(listen),
                (None, None) => "http://localhost:8080".to_owned(),
            },
            alarm_multiple: self.alarm_multiple,
            alarm_floor_per_min: self.alarm_floor_per_min,
            cooling_off_s: self.cooling_off_h * 3600,
            cooling_off_limit_minor: self.cooling_off_limit_minor,
            recovery_wait_s: self.recovery_wait_h * 3600,
            session_idle_s: self.session_idle_min * 60,
            session_absolute_s: self.session_absolute_h * 3600,
            account_delay_after: self.account_delay_after,
            account_lock_after: self.account_lock_after,
            account_lock_s: self.account_lock_min * 60,
            network_failures_max: self.network_failures_max,
            device_failures_max: self.device_failures_max,
            window_s: self.throttle_window_min * 60,
            spray_accounts_max: self.spray_accounts_max,
            requests_per_network_max: self.requests_per_network_max,
            smtp: self.smtp()?,
            dev,
            ..AuthConfig::default()
        })
    }
}

/// Reads the master key, creating the key file (readable by its owner only) on first use.
pub fn master_key(args: &KeyArgs, database_url: &str) -> anyhow::Result<ServerKeys> {
    load_master_key(args, database_url, true)
}

/// The master key, which must exist already (commands that only read the data).
pub fn existing_master_key(args: &KeyArgs, database_url: &str) -> anyhow::Result<ServerKeys> {
    load_master_key(args, database_url, false)
}

/// The directory of the data kept beside the database: the SQLite file's directory, or
/// ./koban-data for a database that is not a local file.
pub fn data_dir(database_url: &str) -> PathBuf {
    match crate::backend::Backend::of(database_url) {
        Ok(crate::backend::Backend::Sqlite(db)) => db
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        _ => PathBuf::from(DEFAULT_MASTER_KEY_FILE)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// The master key from the environment, the command line or the key file; the file is made
/// with a fresh key when it is missing and `create` says so (a server may start a new
/// installation; a command that only checks must not invent a key).
fn load_master_key(args: &KeyArgs, database_url: &str, create: bool) -> anyhow::Result<ServerKeys> {
    if let Some(MasterKeyText(hex)) = &args.master_key {
        return ServerKeys::from_hex(hex).map_err(|e| anyhow::anyhow!("KOBAN_MASTER_KEY: {e}"));
    }
    let path = &args
        .master_key_file
        .clone()
        .unwrap_or_else(|| data_dir(database_url).join("master.key"));
    if !path.exists() {
        if !create {
            bail!(
                "no master key at {}: give the server's key (--master-key-file or KOBAN_MASTER_KEY)",
                path.display()
            );
        }
        create_key_file(path)?;
        tracing::info!(path = %path.display(), "created a new master key; every instance must share it");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ServerKeys::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{}", ServerKeys::generate_hex())?;
    file.sync_all()?;
    Ok(())
}

/// The identity service over `store`'s database, after checking that the database belongs
/// to this master key.
pub async fn auth_for<S: LedgerStore>(
    store: &S,
    keys: ServerKeys,
    config: AuthConfig,
) -> anyhow::Result<Auth<S::Sql>> {
    // `Auth::new` checks the master key against the database before anything else.
    Auth::new(store.sql(), keys, Clock::system(), config)
        .await
        .map_err(|e| anyhow::anyhow!("starting the identity service: {e}"))
}

#[derive(Args, Debug)]
pub struct AdminCreateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The operator's e-mail address.
    #[arg(long)]
    pub email: String,
    /// admin, analyst, support or approver.
    #[arg(long, default_value = "admin")]
    pub role: String,
}

impl WithStore for AdminCreateArgs {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let email = Email::parse(&self.email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
        let role = Role::parse(&self.role).map_err(|e| anyhow::anyhow!("--role: {e}"))?;
        let auth = auth_for(
            &store,
            master_key(&self.identity.keys, self.database.database_url.expose())?,
            self.identity.config(false, None)?,
        )
        .await?;
        let (invite, _) = auth
            .create_operator(&email, role, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        store.shutdown().await;
        println!(
            "Created {} operator {} ({}).",
            role.as_str(),
            email.as_str(),
            invite.operator_id
        );
        println!(
            "Send this one-time enrolment link to them (valid 72 hours); they choose a password there"
        );
        println!("and must set up an authenticator app at first sign-in:");
        println!("{}", invite.enrolment_link.expose());
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// An anchor file written by `koban serve` (default: `audit-anchor.jsonl` beside the
    /// database): every signed checkpoint in it must still be in the chain, so that entries
    /// cut from the chain's end, or rewritten in the old unkeyed format, are found too.
    #[arg(long, conflicts_with = "no_anchor")]
    pub anchor: Option<PathBuf>,
    /// Verify without an anchor file (a chain cut at its end, or rewritten whole in the old
    /// unkeyed format, then goes unseen); without it, a missing anchor file is an error.
    #[arg(long)]
    pub no_anchor: bool,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl WithStore for AuditVerifyArgs {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let url = self.database.database_url.expose();
        let key = load_master_key(&self.keys, url, false)?.audit_key();
        let anchor = match (&self.anchor, self.no_anchor) {
            (_, true) => None,
            (Some(path), false) => Some(path.clone()),
            (None, false) => Some(data_dir(url).join(crate::workers::ANCHOR_FILE)),
        };
        let (anchors, torn) = match &anchor {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "reading the anchor file {} (give --anchor FILE, or --no-anchor to verify without one)",
                        path.display()
                    )
                })?;
                koban_shared::audit::read_anchor(&text, &key)
                    .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?
            }
            None => (Vec::new(), 0),
        };
        let report = koban_shared::audit::verify(&store.sql(), &key, &anchors)
            .await
            .map_err(|e| anyhow::anyhow!("reading the audit log: {e}"))?;
        store.shutdown().await;
        print_verify(&report, anchor.as_deref(), torn, self.json);
        Ok(if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

fn print_verify(
    report: &koban_shared::audit::VerifyReport,
    anchor: Option<&Path>,
    torn: u64,
    json: bool,
) {
    let at = |found: Option<(i64, &str)>| {
        found.map(|(seq, why)| serde_json::json!({ "seq": seq, "reason": why }))
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": report.ok(),
                "entries": report.entries,
                "unkeyed_entries": report.unkeyed,
                "anchor_file": anchor.map(|p| p.display().to_string()),
                "anchors_checked": report.anchors,
                "anchor_lines_torn": torn,
                "ledger_checkpoints": report.ledger_checkpoints,
                "transfers_covered": report.transfers_covered,
                "first_broken": at(report.first_broken),
                "ledger_broken": at(report.ledger_broken),
            })
        );
        return;
    }
    match report.first_broken {
        Some((seq, why)) => println!(
            "BROKEN at entry {seq}: {why} ({} entries before it verified)",
            report.entries
        ),
        None => println!("ok: {} entries, every link verified", report.entries),
    }
    if report.unkeyed > 0 {
        println!(
            "note: the first {} entries were written before the chain was keyed",
            report.unkeyed
        );
    }
    match anchor {
        Some(path) => println!(
            "anchors: {} checkpoints of {} found in the chain ({torn} torn lines skipped)",
            report.anchors,
            path.display()
        ),
        None => {
            println!("anchors: none checked (--no-anchor): entries cut from the end would not show")
        }
    }
    match report.ledger_broken {
        Some((seq, why)) => println!("LEDGER BROKEN at checkpoint entry {seq}: {why}"),
        None => println!(
            "ledger: {} checkpoints, {} transfers verified",
            report.ledger_checkpoints, report.transfers_covered
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::public_url_for;

    #[test]
    fn the_public_url_follows_the_listening_port_and_names_loopback_localhost() {
        let url = |listen: &str| public_url_for(listen.parse().unwrap());
        assert_eq!(url("127.0.0.1:9000"), "http://localhost:9000");
        assert_eq!(url("0.0.0.0:8081"), "http://localhost:8081");
        assert_eq!(url("[::1]:7000"), "http://localhost:7000");
        assert_eq!(url("[::]:7001"), "http://localhost:7001");
        assert_eq!(url("192.0.2.5:80"), "http://192.0.2.5:80");
        assert_eq!(url("[2001:db8::1]:443"), "http://[2001:db8::1]:443");
    }
}
