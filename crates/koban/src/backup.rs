//! `koban backup` and `koban restore` for the embedded SQLite database. A backup is one
//! consistent snapshot taken while the service runs; a restore puts one in place of the
//! database (the server stopped), keeps what it replaces beside it, and checks the result.
//! Both end with the ledger's invariants and the audit chain verified on the copy.
//! PostgreSQL is backed up with its own tools (see the README's operations section).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use koban_store::LedgerStore;
use koban_store_sqlite::{SqliteConfig, SqliteStore};

use crate::backend::Backend;
use crate::cli::DatabaseArgs;
use crate::identity::KeyArgs;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The file to write (it must not exist yet). Keep it apart from the master key: the key
    /// opens the sealed data in it.
    #[arg(long)]
    pub to: PathBuf,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The backup to restore, written by `koban backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// What the checks found in a copy of the database.
struct Checked {
    /// SQLite's integrity check of the file.
    file_ok: bool,
    accounts: u64,
    transfers: u64,
    ledger_ok: bool,
    problems: Vec<String>,
    audit_entries: u64,
    audit_ok: bool,
}

impl Checked {
    fn ok(&self) -> bool {
        self.file_ok && self.ledger_ok && self.audit_ok
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "file_ok": self.file_ok,
            "accounts": self.accounts,
            "transfers": self.transfers,
            "invariants_ok": self.ledger_ok,
            "problems": self.problems,
            "audit_entries": self.audit_entries,
            "audit_chain_ok": self.audit_ok,
        })
    }
}

fn sqlite_path(database: &DatabaseArgs, what: &str) -> anyhow::Result<PathBuf> {
    match Backend::of(database.database_url.expose())? {
        Backend::Sqlite(path) => Ok(path),
        Backend::Postgres(_) => bail!(
            "koban {what} is for the embedded SQLite database; back PostgreSQL up with pg_dump or continuous archiving (see the README's operations section)"
        ),
    }
}

/// Opens the database file at `path` and checks the ledger and the audit chain (without
/// anchors: the anchor file describes the live chain, which may have moved on).
async fn check(path: &Path, keys: &koban_auth::ServerKeys) -> anyhow::Result<Checked> {
    // The file first: a damaged page may lie where the ledger and the chain never read.
    let damage = SqliteStore::integrity_problems(path)
        .unwrap_or_else(|e| vec![format!("the file cannot be read as a database: {e}")]);
    if !damage.is_empty() {
        return Ok(Checked {
            file_ok: false,
            accounts: 0,
            transfers: 0,
            ledger_ok: false,
            problems: damage,
            audit_entries: 0,
            audit_ok: false,
        });
    }
    let store = SqliteStore::open(path, SqliteConfig::default())
        .with_context(|| format!("opening {}", path.display()))?;
    let ledger = store.audit().await?;
    let chain = koban_shared::audit::verify(&store.sql(), &keys.audit_key(), &[])
        .await
        .map_err(|e| anyhow::anyhow!("reading the audit log: {e}"))?;
    store.shutdown().await;
    Ok(Checked {
        file_ok: true,
        accounts: ledger.accounts,
        transfers: ledger.transfers,
        ledger_ok: ledger.ok(),
        problems: ledger.problems.clone(),
        audit_entries: chain.entries,
        audit_ok: chain.ok(),
    })
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let path = sqlite_path(&args.database, "backup")?;
    let keys =
        crate::identity::existing_master_key(&args.keys, args.database.database_url.expose())?;
    let started = std::time::Instant::now();
    let bytes = SqliteStore::backup_into(&path, &args.to)
        .map_err(|e| anyhow::anyhow!("backing up {}: {e}", path.display()))?;
    let copied_s = started.elapsed().as_secs_f64();
    // The backup is checked as a restore would check it, on a scratch copy, so the file
    // itself stays exactly as written.
    let scratch = tempfile::tempdir().context("a scratch directory")?;
    let copy = scratch.path().join("check.db");
    std::fs::copy(&args.to, &copy).context("copying the backup for its check")?;
    let checked = check(&copy, &keys).await?;
    if args.json {
        let mut json = checked.json();
        json["backup"] = args.to.display().to_string().into();
        json["bytes"] = bytes.into();
        json["seconds"] = copied_s.into();
        json["ok"] = checked.ok().into();
        println!("{json}");
    } else {
        println!(
            "{}: {} ({bytes} bytes in {copied_s:.1} s): file {}, {} accounts, {} transfers, ledger {}, audit chain {} ({} entries)",
            if checked.ok() { "OK" } else { "FAILED" },
            args.to.display(),
            if checked.file_ok { "ok" } else { "DAMAGED" },
            checked.accounts,
            checked.transfers,
            if checked.ledger_ok { "ok" } else { "BROKEN" },
            if checked.audit_ok { "ok" } else { "BROKEN" },
            checked.audit_entries,
        );
        for problem in &checked.problems {
            println!("  problem: {problem}");
        }
    }
    Ok(if checked.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let path = sqlite_path(&args.database, "restore")?;
    let keys =
        crate::identity::existing_master_key(&args.keys, args.database.database_url.expose())?;
    if !args.from.is_file() {
        bail!("no backup at {}", args.from.display());
    }
    // No server may run on the file meanwhile; the lock is held until the restore is done.
    let _serving = crate::backend::lock_for_serving(&path)?;
    // Checked before anything is replaced: a damaged backup leaves the database as it was.
    let incoming = with_suffix(&path, ".restoring");
    // The copy and its log files, also what an earlier restore that failed left behind.
    let discard = |file: &Path| {
        for part in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(file, part));
        }
    };
    discard(&incoming);
    std::fs::copy(&args.from, &incoming)
        .with_context(|| format!("copying {} beside the database", args.from.display()))?;
    let checked = check(&incoming, &keys).await;
    // The check opened the copy (and may have migrated it): its log goes into the file, and
    // only then are the emptied log files removed.
    let settled = checked.is_ok()
        && SqliteStore::checkpoint(&incoming).is_ok()
        && ["-wal", "-shm"].iter().all(|part| {
            let file = with_suffix(&incoming, part);
            !file.exists() || std::fs::remove_file(file).is_ok()
        });
    let checked = match checked {
        Ok(checked) if checked.ok() && settled => checked,
        other => {
            discard(&incoming);
            let why = match other {
                Ok(checked) if !checked.ok() => format!(
                    "the backup fails its checks (file {}, ledger {}, audit chain {})",
                    if checked.file_ok { "ok" } else { "damaged" },
                    if checked.ledger_ok { "ok" } else { "broken" },
                    if checked.audit_ok { "ok" } else { "broken" }
                ),
                Ok(_) => "the checked copy could not be settled into one file".to_owned(),
                Err(error) => format!("the backup could not be checked: {error:#}"),
            };
            bail!("{why}; the database was not touched");
        }
    };
    std::fs::File::open(&incoming)
        .and_then(|f| f.sync_all())
        .context("syncing the restored copy")?;
    // The database being replaced: its log goes into the file first, so the copy kept aside
    // is whole by itself; a log without its database would be replayed into the backup.
    let live_log = ["-wal", "-shm"]
        .iter()
        .any(|part| with_suffix(&path, part).exists());
    if path.exists() {
        if let Err(error) = SqliteStore::checkpoint(&path) {
            discard(&incoming);
            bail!("{error}; the database was not touched");
        }
    } else if live_log {
        discard(&incoming);
        bail!(
            "{}-wal exists without its database: move it away first; the database was not touched",
            path.display()
        );
    }
    // What is replaced is kept beside it (a second name for the same file, so the database
    // never goes missing), and so is the anchor file of the chain being replaced (its
    // checkpoints would not match the restored chain). Then the backup takes the database's
    // name in one rename.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let aside = with_suffix(&path, &format!(".before-restore-{stamp}"));
    let mut moved = Vec::new();
    if path.exists() {
        std::fs::hard_link(&path, &aside)
            .with_context(|| format!("keeping {} as {}", path.display(), aside.display()))?;
        moved.push(aside.display().to_string());
        for part in ["-wal", "-shm"] {
            // Emptied by the checkpoint; they belong to the replaced database.
            let _ = std::fs::remove_file(with_suffix(&path, part));
        }
    }
    std::fs::rename(&incoming, &path)
        .with_context(|| format!("putting the backup in place at {}", path.display()))?;
    koban_store_sqlite::sync_dir(&path)?;
    let anchor = crate::identity::data_dir(args.database.database_url.expose())
        .join(crate::workers::ANCHOR_FILE);
    if anchor.exists() {
        let to = with_suffix(&anchor, &format!(".before-restore-{stamp}"));
        std::fs::rename(&anchor, &to)
            .with_context(|| format!("moving {} aside", anchor.display()))?;
        moved.push(to.display().to_string());
    }
    if args.json {
        let mut json = checked.json();
        json["restored_from"] = args.from.display().to_string().into();
        json["database"] = path.display().to_string().into();
        json["moved_aside"] = moved.into();
        json["ok"] = true.into();
        println!("{json}");
    } else {
        println!(
            "OK: {} restored to {}: {} accounts, {} transfers, ledger ok, audit chain ok ({} entries)",
            args.from.display(),
            path.display(),
            checked.accounts,
            checked.transfers,
            checked.audit_entries
        );
        for file in &moved {
            println!("  kept the replaced file as {file}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
