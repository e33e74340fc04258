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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: health and metrics endpoints and background workers.
    Serve(ServeArgs),
    /// Apply the embedded database migrations and exit (serve also applies them at start).
    Migrate(DatabaseArgs),
    /// Benchmarks that print figures as JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Read-only checks of stored data.
    #[command(subcommand)]
    Audit(AuditCommand),
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
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Drive the ledger through the real storage backend with concurrent submitters.
    Ledger(crate::bench::LedgerBenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the ledger's invariants (money sums to zero per currency, limits respected,
    /// balances equal their transfers) and, optionally, that acknowledged transfers are present.
    Ledger(crate::audit::LedgerAuditArgs),
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => crate::serve::serve(args).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate(args) => {
                let applied = backend::migrate(args.database_url.expose()).await?;
                println!("{{\"migrations_applied\": {applied}}}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(BenchCommand::Ledger(args)) => crate::bench::ledger(args).await,
            Command::Audit(AuditCommand::Ledger(args)) => {
                let url = args.database.database_url.expose().to_owned();
                backend::open(&url, BackendOptions::default(), args).await
            }
        }
    })
}
