//! `koban audit ledger`: reads everything back and checks the ledger's invariants.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use koban_ledger::TransferId;
use koban_store::LedgerStore;

use crate::backend::WithStore;
use crate::cli::DatabaseArgs;

#[derive(Args, Debug)]
pub struct LedgerAuditArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A file of acknowledged transfer ids (32 hex digits per line, as written by
    /// `koban bench ledger --ack-log`); each must be present. A torn last line is ignored.
    #[arg(long)]
    pub acked: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Reads an acknowledgement log; a last line cut short by a crash is skipped.
pub fn read_ack_log(path: &std::path::Path) -> anyhow::Result<Vec<TransferId>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ids = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        match u128::from_str_radix(line, 16)
            .ok()
            .filter(|_| line.len() == 32)
            .and_then(|v| TransferId::new(v).ok())
        {
            Some(id) => ids.push(id),
            None if last => {}
            None => anyhow::bail!("line {} of {} is not a transfer id", i + 1, path.display()),
        }
    }
    Ok(ids)
}

impl WithStore for LedgerAuditArgs {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let report = store.audit().await?;
        let (acked, present) = match &self.acked {
            Some(path) => {
                let ids = read_ack_log(path)?;
                let count = u64::try_from(ids.len())?;
                (count, store.count_transfers_present(ids).await?)
            }
            None => (0, 0),
        };
        store.shutdown().await;
        let ok = report.ok() && present == acked;
        if self.json {
            let json = serde_json::json!({
                "backend": store.backend(),
                "invariants_ok": ok,
                "accounts": report.accounts,
                "transfers": report.transfers,
                "holds_pending": report.holds_pending,
                "acked": acked,
                "acked_present": present,
                "problems_count": report.problems_count,
                "problems": report.problems,
            });
            println!("{json}");
        } else {
            println!(
                "{}: {} accounts, {} transfers, {} pending holds; acknowledged present {present}/{acked}",
                if ok { "OK" } else { "FAILED" },
                report.accounts,
                report.transfers,
                report.holds_pending
            );
            for problem in &report.problems {
                println!("  problem: {problem}");
            }
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
