//! Choosing the storage backend from the database URL, once, at start.

use anyhow::{Context, bail};
use koban_store::queue::QueueConfig;
use koban_store::{Clock, LedgerStore};
use koban_store_postgres::{PgConfig, PgStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore, path_from_url};

/// The embedded default: a SQLite file under `./koban-data`, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./koban-data/koban.db";

/// Options that apply to whichever backend the URL names.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// PostgreSQL only: a schema to create and use (benchmarks use a fresh one).
    pub schema: Option<String>,
    pub queue: QueueConfig,
}

/// Something to run with a store, whichever backend it is.
pub trait WithStore {
    type Output;
    fn run<S: LedgerStore>(
        self,
        store: S,
    ) -> impl Future<Output = anyhow::Result<Self::Output>> + Send;
}

/// Opens the backend named by `url` (applying migrations) and runs `job` with it.
pub async fn open<J: WithStore>(
    url: &str,
    options: BackendOptions,
    job: J,
) -> anyhow::Result<J::Output> {
    if url.starts_with("sqlite:") {
        let path = path_from_url(url)?;
        let config = SqliteConfig {
            queue: options.queue,
            clock: Clock::system(),
        };
        let store = SqliteStore::open(&path, config)
            .with_context(|| format!("opening {}", path.display()))?;
        job.run(store).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let config = PgConfig {
            queue: options.queue,
            schema: options.schema,
            ..PgConfig::default()
        };
        let store = PgStore::connect(url, config)
            .await
            .context("connecting to PostgreSQL")?;
        job.run(store).await
    } else {
        bail!("unsupported database URL: use sqlite://PATH or postgres://...")
    }
}

/// Applies migrations only; returns how many were new.
pub async fn migrate(url: &str) -> anyhow::Result<usize> {
    if url.starts_with("sqlite:") {
        Ok(SqliteStore::migrate_only(&path_from_url(url)?)?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = koban_store_postgres::connect_pool(url, &PgConfig::default()).await?;
        Ok(koban_store_postgres::migrate(&pool).await?)
    } else {
        bail!("unsupported database URL: use sqlite://PATH or postgres://...")
    }
}
