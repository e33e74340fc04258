//! Keys: card key files (`koban keys generate`, `koban keys rotate`, and loading the file at
//! start) and the rotation of the personal data keys (`koban keys rotate-personal`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use koban_auth::AuthConfig;
use koban_cards::card_keys::CardKeys;
use koban_store::LedgerStore;

use crate::backend::WithStore;
use crate::cli::DatabaseArgs;
use crate::identity::KeyArgs;

/// Reads and validates a card key file; errors name the file and the problem, never a key.
pub fn load(path: &Path) -> anyhow::Result<CardKeys> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    CardKeys::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Where `--dev` keeps its development card keys: beside the SQLite database, or in
/// ./koban-data for PostgreSQL.
pub fn dev_key_file(database_url: &str) -> PathBuf {
    match crate::backend::Backend::of(database_url) {
        Ok(crate::backend::Backend::Sqlite(db)) => db
            .parent()
            .map(|dir| dir.join("card-keys.dev.json"))
            .unwrap_or_else(|| PathBuf::from("card-keys.dev.json")),
        _ => PathBuf::from("./koban-data/card-keys.dev.json"),
    }
}

/// The development key file, created with fresh keys on first use.
pub fn load_or_create_dev(path: &Path) -> anyhow::Result<CardKeys> {
    if !path.exists() {
        write(path, &CardKeys::generate(), false)?;
    }
    load(path)
}

/// Writes a key file readable by its owner only: a new file, or atomically replacing one.
fn write(path: &Path, keys: &CardKeys, replace: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let target = if replace {
        path.with_extension("tmp")
    } else {
        path.to_path_buf()
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&target)
        .with_context(|| format!("creating {}", target.display()))?;
    writeln!(file, "{}", keys.to_json())?;
    file.sync_all()?;
    if replace {
        std::fs::rename(&target, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Where to write the new key file (it must not exist yet).
    #[arg(long, env = "KOBAN_CARD_KEYS_FILE")]
    pub card_keys_file: PathBuf,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    if args.card_keys_file.exists() {
        bail!(
            "{} exists; use `koban keys rotate` to add a data key to it",
            args.card_keys_file.display()
        );
    }
    write(&args.card_keys_file, &CardKeys::generate(), false)?;
    println!(
        "Wrote {} (mode 0600). Keep it apart from database backups; start the service with --card-keys-file.",
        args.card_keys_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// The card key file to rotate.
    #[arg(long, env = "KOBAN_CARD_KEYS_FILE")]
    pub card_keys_file: PathBuf,
    /// Do not add a key: only re-seal cards not yet under the active key (to finish an
    /// interrupted rotation).
    #[arg(long)]
    pub reseal_only: bool,
}

impl WithStore for RotateArgs {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let mut keys = load(&self.card_keys_file)?;
        if !self.reseal_only {
            keys = keys.with_new_data_key();
            // The file first: if re-sealing stops half-way, every card is still readable
            // (old keys stay in the file) and `--reseal-only` finishes the job.
            write(&self.card_keys_file, &keys, true)?;
        }
        let master = crate::identity::master_key(&self.keys, self.database.database_url.expose())?;
        let auth = crate::identity::auth_for(&store, master, AuthConfig::default()).await?;
        let active = keys.active_id().to_owned();
        let pay = koban_pay::Payments::new(store.clone(), auth, koban_pay::PayConfig::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let cards =
            koban_cards::Cards::new(pay, koban_cards::CardConfig::default()).with_keys(keys);
        let missing = cards
            .missing_card_keys()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !missing.is_empty() {
            bail!(
                "cards are sealed under key ids {missing:?} that {} lacks; restore those keys first",
                self.card_keys_file.display()
            );
        }
        let resealed = cards
            .reseal_cards()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        store.shutdown().await;
        println!("{{\"active_key\": \"{active}\", \"cards_resealed\": {resealed}}}");
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args, Debug)]
pub struct RotatePersonalArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Seconds until the new key seals: longer than serving instances take to load it (they
    /// reload every 10 s). 0 only when nothing is serving.
    #[arg(long, default_value_t = (koban_shared::personal::ACTIVATION_MS / 1000) as u32, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub activate_after_s: u32,
    /// Do not add a key: only re-seal values not yet under the active key (to finish an
    /// interrupted rotation).
    #[arg(long)]
    pub reseal_only: bool,
}

impl WithStore for RotatePersonalArgs {
    type Output = ExitCode;

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<ExitCode> {
        let master = crate::identity::master_key(&self.keys, self.database.database_url.expose())?;
        let auth = crate::identity::auth_for(&store, master, AuthConfig::default()).await?;
        if !self.reseal_only {
            let (id, active_from) = auth
                .vault()
                .rotate(auth.db(), i64::from(self.activate_after_s) * 1000)
                .await?;
            eprintln!(
                "personal data key {id} added; it starts sealing in {} s",
                self.activate_after_s
            );
            // Until it seals everywhere: instances that took a little longer to reload the
            // keys may seal under the old one a moment past its time.
            let settled = active_from + koban_shared::personal::REFRESH_MS;
            let wait = u64::try_from(settled - auth.now_ms()).unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        auth.refresh_personal_keys()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Passes until one finds nothing left under an older key.
        let mut resealed = 0;
        for _ in 0..5 {
            let pass = koban_shared::personal::reseal(auth.db(), auth.vault()).await?;
            resealed += pass;
            if pass == 0 {
                break;
            }
        }
        let active = auth.vault().active_key_id();
        store.shutdown().await;
        println!("{{\"active_key\": \"{active}\", \"values_resealed\": {resealed}}}");
        Ok(ExitCode::SUCCESS)
    }
}
