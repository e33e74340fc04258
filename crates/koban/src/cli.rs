//! The command line. Every command has `--help`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::backend::{self, BackendOptions, DEFAULT_DATABASE_URL, DatabaseUrl};

#[derive(Parser, Debug)]
#[command(
    name = "koban",
    version,
    about = "Koban: a cashless payment service (stored-value wallets, double-entry ledger)"
)]
pub struct Cli {
    /// A TOML file of settings, keyed by their flag names (`listen = "127.0.0.1:8080"`); the
    /// environment (`KOBAN_*`) overrides it and flags override both. No secrets in it.
    #[arg(long, env = "KOBAN_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: the HTTP API, health and metrics endpoints, and background workers.
    Serve(Box<ServeArgs>),
    /// Operator administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Apply the embedded database migrations and exit (serve also applies them at start).
    Migrate(DatabaseArgs),
    /// Write a consistent copy of the embedded SQLite database while the service runs (to a
    /// new file), then check the copy: ledger invariants and the audit chain. PostgreSQL is
    /// backed up with pg_dump or continuous archiving (README, Operations).
    Backup(crate::backup::BackupArgs),
    /// Put a backup in place of the embedded SQLite database (the server must be stopped):
    /// the backup is checked first, the replaced files are kept beside it, and the result is
    /// checked again (ledger invariants, audit chain).
    Restore(crate::backup::RestoreArgs),
    /// The configuration: `koban config check` validates it and prints every setting.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Benchmarks that print figures as JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Read-only checks of stored data.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Card data keys: create a key file, rotate the data key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The risk engine: replay recorded events through candidate rules.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// A card-network simulator: drives a card through realistic message sequences against
    /// a running server (auth, incremental, partial captures, reversal, refund). The wallet
    /// needs about 12,000 yen.
    CardNetwork(crate::card_network::CardNetworkArgs),
    /// Attack drills (stuffing, spraying, reset and recovery hijacks, a stolen-session drain,
    /// a mule chain, payment-code guessing, stolen cards, bank-link guessing, card testing, a
    /// lone insider) against the service's own server (development mode, a temporary
    /// database) or a running one on loopback, while bystanders keep paying each other.
    /// Prints one row per attack (with --json, one document); exits non-zero if money reached
    /// an attacker or an account was taken over.
    Drill(crate::drill::DrillArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Build every setting `serve` would (from the file, the environment and these flags)
    /// without starting anything; print each with where its value came from, secrets masked.
    /// Exits non-zero if any setting is invalid.
    Check(Box<crate::config::CheckArgs>),
}

#[derive(Subcommand, Debug)]
pub enum RiskCommand {
    /// Replay recorded events through a candidate rules file and report, per rule, how many
    /// events it would have alerted, challenged, held or denied, against the live set.
    Backtest(crate::risk::BacktestArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new card key file with fresh random keys (refuses to overwrite one).
    Generate(crate::keys::GenerateArgs),
    /// Add a new data key to the card key file, make it the active one, and re-seal every
    /// stored card number under it (old keys stay in the file so nothing becomes unreadable).
    Rotate(crate::keys::RotateArgs),
    /// Add a new data key for personal data (e-mail addresses, phone numbers, names, bank
    /// holders, notices), wait until every serving instance seals with it, and re-seal every
    /// stored value under it. The keys live in the database, wrapped under the master key.
    RotatePersonal(crate::keys::RotatePersonalArgs),
}

#[derive(Args, Debug)]
pub struct DatabaseArgs {
    /// Database URL: sqlite://PATH (embedded, the default) or postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "KOBAN_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: DatabaseUrl,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on (use port 0 for any free port; the chosen address is logged).
    #[arg(long, env = "KOBAN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seconds between sweeps that release expired holds.
    #[arg(long, env = "KOBAN_HOLD_SWEEP_INTERVAL_S", default_value_t = 1)]
    pub hold_sweep_interval_s: u64,
    /// A file outside the database where signed checkpoints of the audit chain's head are
    /// appended (`koban audit verify --anchor` checks them). Default: `audit-anchor.jsonl`
    /// beside the SQLite database, or in ./koban-data.
    #[arg(long, env = "KOBAN_AUDIT_ANCHOR_FILE")]
    pub audit_anchor_file: Option<std::path::PathBuf>,
    /// Seconds between audit checkpoints: a digest of the ledger's settled transfers is added
    /// to the chain, then the chain's head is anchored (and once more at shutdown).
    #[arg(long, env = "KOBAN_AUDIT_CHECKPOINT_INTERVAL_S", default_value_t = 60)]
    pub audit_checkpoint_interval_s: u64,
    /// Development mode: cookies without `Secure` (plain http), and the local mailbox readable
    /// at GET /v1/dev/mailbox?to=ADDRESS so verification codes can be read without e-mail.
    #[arg(long, env = "KOBAN_DEV")]
    pub dev: bool,
    /// Take the client's address from the last X-Forwarded-For hop. Only behind a proxy you
    /// run, which sets that header: otherwise clients could pick their own address.
    #[arg(long, env = "KOBAN_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    #[command(flatten)]
    pub identity: crate::identity::IdentityArgs,
    #[command(flatten)]
    pub payments: PaymentArgs,
}

/// Payments settings. Amounts are minor units of each wallet currency.
#[derive(Args, Debug, Clone)]
pub struct PaymentArgs {
    /// Turn on the sandbox bank and the test-money faucet (always on with --dev).
    #[arg(long, env = "KOBAN_SANDBOX")]
    pub sandbox: bool,
    /// Currencies wallets may be held in, comma-separated; the first is the default.
    #[arg(
        long,
        env = "KOBAN_CURRENCIES",
        default_value = "JPY",
        value_delimiter = ','
    )]
    pub currencies: Vec<String>,
    /// Seconds the sandbox bank takes to settle a top-up or payout.
    #[arg(long, env = "KOBAN_SANDBOX_SETTLE_AFTER_S", default_value_t = 5)]
    pub sandbox_settle_after_s: i64,
    /// Largest balance of an unverified wallet.
    #[arg(long, env = "KOBAN_UNVERIFIED_BALANCE_MAX", default_value_t = 100_000)]
    pub unverified_balance_max: u64,
    /// Most that may leave an unverified wallet per day.
    #[arg(long, env = "KOBAN_UNVERIFIED_DAILY_OUT_MAX", default_value_t = 50_000)]
    pub unverified_daily_out_max: u64,
    /// Largest balance of a verified wallet.
    #[arg(long, env = "KOBAN_VERIFIED_BALANCE_MAX", default_value_t = 1_000_000)]
    pub verified_balance_max: u64,
    /// Most that may leave a verified wallet per day.
    #[arg(long, env = "KOBAN_VERIFIED_DAILY_OUT_MAX", default_value_t = 500_000)]
    pub verified_daily_out_max: u64,
    /// Payments of at least this much need step-up, even to a known payee.
    #[arg(long, env = "KOBAN_STEP_UP_FROM", default_value_t = 10_000)]
    pub step_up_from: u64,
    /// The card key file (data keys with ids, card-verification key, network credential;
    /// see `koban keys generate`). Card issuing is on only with it, or with throwaway keys
    /// in --dev; without it, a database that already holds cards refuses to start.
    #[arg(long, env = "KOBAN_CARD_KEYS_FILE")]
    pub card_keys_file: Option<std::path::PathBuf>,
    /// The issuer BIN (6 or 8 digits) new card numbers start with.
    #[arg(long, env = "KOBAN_CARD_BIN", default_value = "499910")]
    pub card_bin: String,
    /// Days an approved card authorization stays valid before its hold is released.
    #[arg(long, env = "KOBAN_CARD_AUTH_EXPIRY_DAYS", default_value_t = 7)]
    pub card_auth_expiry_days: i64,
    /// How far a clearing may exceed its authorization, in basis points (1500 = 15%).
    #[arg(long, env = "KOBAN_CARD_CAPTURE_TOLERANCE_BPS", default_value_t = 0)]
    pub card_capture_tolerance_bps: u64,
    /// The risk rules file (TOML; see crates/koban-risk/RULES.md). Without it the built-in
    /// default set runs. Reloaded on SIGHUP or POST /v1/ops/risk/rules/reload; an invalid
    /// file is refused at start and, on reload, leaves the live set in place.
    #[arg(long, env = "KOBAN_RISK_RULES")]
    pub risk_rules: Option<std::path::PathBuf>,
    /// Reversals of at least this much need a second operator with the approver role
    /// (compensations always do).
    #[arg(long, env = "KOBAN_APPROVAL_FROM", default_value_t = 50_000)]
    pub approval_from: u64,
    /// The most one payer may send to one payee per day.
    #[arg(long, env = "KOBAN_PER_PAYEE_DAILY_MAX", default_value_t = koban_pay::PayConfig::default().per_payee_daily_max)]
    pub per_payee_daily_max: u64,
    /// A transfer of at least this much to a new payee is held for an analyst's review.
    #[arg(long, env = "KOBAN_REVIEW_NEW_PAYEE_FROM", default_value_t = koban_pay::PayConfig::default().review_new_payee_from_minor)]
    pub review_new_payee_from: u64,
    /// Distinct senders to one young account within an hour that hold further transfers to
    /// it (a mule's fan-in).
    #[arg(long, env = "KOBAN_FAN_IN_SENDERS_MAX", default_value_t = koban_pay::PayConfig::default().fan_in_senders_max)]
    pub fan_in_senders_max: usize,
    /// The most a newly linked bank account may top up per day during its cooling period ...
    #[arg(long, env = "KOBAN_NEW_SOURCE_DAILY_MAX", default_value_t = koban_pay::PayConfig::default().new_source_daily_max)]
    pub new_source_daily_max: u64,
    /// ... which lasts this many hours after it was verified.
    #[arg(long, env = "KOBAN_NEW_SOURCE_COOLING_H", default_value_t = koban_pay::PayConfig::default().new_source_cooling_s / 3600)]
    pub new_source_cooling_h: i64,
    /// The most one customer-presented payment code can be charged.
    #[arg(long, env = "KOBAN_CODE_LIMIT", default_value_t = koban_pay::PayConfig::default().code_limit_minor)]
    pub code_limit: u64,
    /// Wrong payment codes one merchant key may try within 15 minutes.
    #[arg(long, env = "KOBAN_CODE_GUESSES_MAX", default_value_t = koban_pay::PayConfig::default().code_guesses_max)]
    pub code_guesses_max: i64,
    /// Wrong payment codes one merchant (all its keys) may try within 15 minutes.
    #[arg(long, env = "KOBAN_CODE_GUESSES_MERCHANT_MAX", default_value_t = koban_pay::PayConfig::default().code_guesses_merchant_max)]
    pub code_guesses_merchant_max: i64,
    /// Wrong payment codes one network may try within 15 minutes.
    #[arg(long, env = "KOBAN_CODE_GUESSES_NETWORK_MAX", default_value_t = koban_pay::PayConfig::default().code_guesses_network_max)]
    pub code_guesses_network_max: i64,
    /// Payee lookups and transfers naming an address that belongs to no customer, per payer
    /// within an hour, before lookups are refused for the rest of it and an alert is raised.
    #[arg(long, env = "KOBAN_LOOKUP_MISSES_MAX", default_value_t = koban_pay::PayConfig::default().lookup_misses_max)]
    pub lookup_misses_max: i64,
    /// The same, per network.
    #[arg(long, env = "KOBAN_LOOKUP_MISSES_NETWORK_MAX", default_value_t = koban_pay::PayConfig::default().lookup_misses_network_max)]
    pub lookup_misses_network_max: i64,
    /// Days risk decisions (with the device and network they name) are kept before they are
    /// only counted per month.
    #[arg(long, env = "KOBAN_KEEP_RISK_DAYS", default_value_t = koban_pay::retention::Retention::default().risk_events_days,
          value_parser = clap::value_parser!(i64).range(30..=3650))]
    pub keep_risk_days: i64,
    /// Days sessions (with their network and browser) are kept after they ended.
    #[arg(long, env = "KOBAN_KEEP_SESSIONS_DAYS", default_value_t = koban_pay::retention::Retention::default().sessions_days,
          value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub keep_sessions_days: i64,
    /// Days notices are kept after they were delivered or given up.
    #[arg(long, env = "KOBAN_KEEP_NOTICES_DAYS", default_value_t = koban_pay::retention::Retention::default().notices_days,
          value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub keep_notices_days: i64,
    /// Days a closed account's personal data is kept (the legal retention of verification
    /// and transaction records) before it is erased.
    #[arg(long, env = "KOBAN_KEEP_CLOSED_ACCOUNTS_DAYS", default_value_t = koban_pay::retention::Retention::default().closed_accounts_days,
          value_parser = clap::value_parser!(i64).range(0..=36500))]
    pub keep_closed_accounts_days: i64,
    /// Merchant fee unless set per merchant: basis points of the amount ...
    #[arg(long, env = "KOBAN_FEE_BPS", default_value_t = koban_pay::PayConfig::default().fee_bps)]
    pub fee_bps: u64,
    /// ... plus this fixed part, in minor units.
    #[arg(long, env = "KOBAN_FEE_FIXED", default_value_t = koban_pay::PayConfig::default().fee_fixed_minor)]
    pub fee_fixed: u64,
    /// The issuer's own account at a bank reached by ISO 20022 files, as bank code, branch
    /// code and number (`0001-123-1234567`): connects that bank (`iso20022`). Payouts and
    /// micro-deposits go out as pain.001 files; the bank's camt.053/camt.054 files, imported
    /// by an operator, settle top-ups and payouts.
    #[arg(long, env = "KOBAN_BANK_ACCOUNT")]
    pub bank_account: Option<String>,
    /// The issuer's name on the bank files.
    #[arg(long, env = "KOBAN_BANK_NAME", default_value = "Koban")]
    pub bank_name: String,
    /// A folder the pain.001 files are written to for the bank channel to pick up (each
    /// file also stays downloadable from the operators' API).
    #[arg(long, env = "KOBAN_BANK_OUTBOX")]
    pub bank_outbox: Option<std::path::PathBuf>,
}

impl PaymentArgs {
    pub fn config(&self, dev: bool) -> anyhow::Result<koban_pay::PayConfig> {
        if self.fan_in_senders_max < 1
            || !(0..=24 * 30).contains(&self.new_source_cooling_h)
            || self.code_guesses_max < 1
            || self.code_guesses_merchant_max < 1
            || self.code_guesses_network_max < 1
            || self.lookup_misses_max < 1
            || self.lookup_misses_network_max < 1
        {
            anyhow::bail!(
                "--fan-in-senders-max and the --code-guesses limits must be at least 1, --new-source-cooling-h 0 to 720"
            );
        }
        if self.fee_bps > 10_000 {
            anyhow::bail!("--fee-bps must be at most 10000 (100%)");
        }
        let mut currencies = Vec::new();
        for code in &self.currencies {
            currencies.push(koban_ledger::Currency::parse(code.trim()).map_err(|_| {
                anyhow::anyhow!("--currencies: {code} is not a supported currency")
            })?);
        }
        Ok(koban_pay::PayConfig {
            currencies,
            sandbox: self.sandbox || dev,
            settle_after_s: self.sandbox_settle_after_s.max(0),
            unverified: koban_pay::TierLimits {
                balance_max: self.unverified_balance_max,
                daily_out_max: self.unverified_daily_out_max,
            },
            verified: koban_pay::TierLimits {
                balance_max: self.verified_balance_max,
                daily_out_max: self.verified_daily_out_max,
            },
            step_up_from_minor: self.step_up_from,
            approval_from_minor: self.approval_from,
            per_payee_daily_max: self.per_payee_daily_max,
            review_new_payee_from_minor: self.review_new_payee_from,
            fan_in_senders_max: self.fan_in_senders_max,
            new_source_daily_max: self.new_source_daily_max,
            new_source_cooling_s: self.new_source_cooling_h * 3600,
            code_limit_minor: self.code_limit,
            code_guesses_max: self.code_guesses_max,
            code_guesses_merchant_max: self.code_guesses_merchant_max,
            code_guesses_network_max: self.code_guesses_network_max,
            lookup_misses_max: self.lookup_misses_max,
            lookup_misses_network_max: self.lookup_misses_network_max,
            fee_bps: self.fee_bps,
            fee_fixed_minor: self.fee_fixed,
            file_bank: self.file_bank()?,
            retention: koban_pay::retention::Retention {
                risk_events_days: self.keep_risk_days,
                sessions_days: self.keep_sessions_days,
                notices_days: self.keep_notices_days,
                closed_accounts_days: self.keep_closed_accounts_days,
            },
            ..koban_pay::PayConfig::default()
        })
    }

    /// The ISO 20022 file bank of `--bank-account`, if given.
    fn file_bank(&self) -> anyhow::Result<Option<koban_pay::connectors::FileBank>> {
        let Some(account) = &self.bank_account else {
            if self.bank_outbox.is_some() {
                anyhow::bail!("--bank-outbox needs --bank-account");
            }
            return Ok(None);
        };
        let account = koban_pay::iso20022::ZenginAccount::parse(account)
            .map_err(|e| anyhow::anyhow!("--bank-account: {e}"))?;
        let name = self.bank_name.trim();
        if name.is_empty() || name.chars().count() > 140 {
            anyhow::bail!("--bank-name must be 1 to 140 characters");
        }
        if let Some(dir) = &self.bank_outbox
            && !dir.is_dir()
        {
            anyhow::bail!("--bank-outbox {} is not a folder", dir.display());
        }
        Ok(Some(koban_pay::connectors::FileBank {
            account,
            name: name.to_owned(),
            outbox: self.bank_outbox.clone(),
        }))
    }

    pub fn card_config(&self) -> anyhow::Result<koban_cards::CardConfig> {
        Ok(koban_cards::CardConfig {
            bin: {
                let bin = self.card_bin.trim();
                if !matches!(bin.len(), 6 | 8) || !bin.bytes().all(|b| b.is_ascii_digit()) {
                    anyhow::bail!("--card-bin must be 6 or 8 digits");
                }
                bin.to_owned()
            },
            auth_expiry_s: {
                if !(1..=30).contains(&self.card_auth_expiry_days) {
                    anyhow::bail!("--card-auth-expiry-days must be 1 to 30");
                }
                self.card_auth_expiry_days * 24 * 3600
            },
            capture_tolerance_bps: {
                if self.card_capture_tolerance_bps > 5_000 {
                    anyhow::bail!("--card-capture-tolerance-bps must be at most 5000 (50%)");
                }
                self.card_capture_tolerance_bps
            },
            ..koban_cards::CardConfig::default()
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an operator (the first admin, typically) and print a one-time enrolment link.
    Create(Box<crate::identity::AdminCreateArgs>),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Drive the ledger through the real storage backend with concurrent submitters.
    Ledger(crate::bench::LedgerBenchArgs),
    /// Customers signing in during a credential-stuffing flood, with and without their device
    /// cookie (embedded SQLite in a temporary directory).
    Login(crate::bench_login::LoginBenchArgs),
    /// Authenticated P2P transfers over HTTP on loopback with concurrent clients (starts a
    /// server on a fresh temporary SQLite database unless --url is given).
    Api(crate::bench_api::ApiBenchArgs),
    /// Card authorizations over the signed card-network API on loopback with concurrent
    /// clients (starts a server on a fresh temporary SQLite database).
    Cards(crate::bench_cards::CardsBenchArgs),
    /// Crashes under load: `koban serve` as a child process under mixed API load (P2P, QR
    /// payments, card authorizations, sign-ins), killed with SIGKILL at random moments and
    /// restarted; every unanswered request is sent again with its key, and the books, the audit
    /// chain, notices, records and wallets are checked after each cycle.
    Chaos(crate::bench_chaos::ChaosBenchArgs),
    /// A seeded synthetic population (normal customers plus injected attacks D1, D4, D5, D7)
    /// through the risk decision engine: throughput, latency, attacks caught, false positives.
    Risk(crate::risk::RiskBenchArgs),
    /// Server time of the web wallet's main pages under light load, signed-in customers with a
    /// history, through the real router in-process (embedded SQLite in a temporary directory).
    Pages(crate::bench_pages::PagesBenchArgs),
    /// A seeded simulation of offline payments: purses paying terminals by QR while the
    /// network comes and goes, cheating devices, late settlement; loss against the stated bound.
    Offline(crate::bench_offline::OfflineBenchArgs),
    /// Every bench above with its defaults, each in its own process: one table, then one JSON
    /// document (`--json`: the document only). Exits non-zero if any bench failed.
    All(crate::bench_all::AllBenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the ledger's invariants (money sums to zero per currency, limits respected,
    /// balances equal their transfers) and, optionally, that acknowledged transfers are present.
    Ledger(crate::audit::LedgerAuditArgs),
    /// Walk the security audit log's hash chain and report the first broken link (exit 1).
    Verify(crate::identity::AuditVerifyArgs),
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli, file: crate::config::FileSettings) -> anyhow::Result<ExitCode> {
    if let Command::Config(ConfigCommand::Check(args)) = cli.command {
        return crate::config::check(*args, &file);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(crate::bench_meter::LOAD_THREAD)
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => crate::serve::serve(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate(args) => {
                let applied = backend::migrate(args.database_url.expose()).await?;
                println!("{{\"migrations_applied\": {applied}}}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Config(_) => unreachable!("handled before the runtime starts"),
            Command::Backup(args) => crate::backup::backup(args).await,
            Command::Restore(args) => crate::backup::restore(args).await,
            Command::Bench(BenchCommand::Ledger(args)) => crate::bench::ledger(args).await,
            Command::Bench(BenchCommand::Login(args)) => crate::bench_login::login(args).await,
            Command::Bench(BenchCommand::Api(args)) => crate::bench_api::api(args).await,
            Command::Bench(BenchCommand::Cards(args)) => crate::bench_cards::cards(args).await,
            Command::Bench(BenchCommand::Chaos(args)) => crate::bench_chaos::chaos(args).await,
            Command::Bench(BenchCommand::Risk(args)) => crate::risk::bench(args).await,
            Command::Bench(BenchCommand::Pages(args)) => crate::bench_pages::pages(args).await,
            Command::Bench(BenchCommand::Offline(args)) => {
                crate::bench_offline::offline(args).await
            }
            Command::Bench(BenchCommand::All(args)) => crate::bench_all::all(args).await,
            Command::Risk(RiskCommand::Backtest(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), args).await
            }
            Command::Keys(KeysCommand::Generate(args)) => crate::keys::generate(args),
            Command::Keys(KeysCommand::Rotate(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), args).await
            }
            Command::Keys(KeysCommand::RotatePersonal(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), args).await
            }
            Command::CardNetwork(args) => crate::card_network::run(args).await,
            Command::Drill(args) => crate::drill::drill(args).await,
            Command::Audit(AuditCommand::Ledger(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), args).await
            }
            Command::Audit(AuditCommand::Verify(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), args).await
            }
            Command::Admin(AdminCommand::Create(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), *args).await
            }
        }
    })
}
