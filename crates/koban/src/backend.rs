//! Choosing the storage backend from the database URL, once, at start.

use anyhow::{Context, bail};
use koban_store::queue::QueueConfig;
use koban_store::{Clock, LedgerStore};
use koban_store_postgres::{PgConfig, PgStore};
use koban_store_sqlite::{SqliteConfig, SqliteStore, path_from_url};

/// The embedded default: a SQLite file under `./koban-data`, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./koban-data/koban.db";

/// A database URL as given on the command line. It may carry a password, so its `Debug`
/// prints it with the password replaced; only [`DatabaseUrl::expose`] gives the real text.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Whether `text`, a URL, may carry a password: in its user part (`user:password@`), or as a
/// `password=` parameter (PostgreSQL URLs accept one).
pub fn url_has_secret(text: &str) -> bool {
    redact_url(text) != text
}

/// `text` with every password in it replaced by `[redacted]`: the user part's (found by the
/// last `@` before the path, whatever characters the password holds) and any `password=`
/// parameter's.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // A password may hold `/` or `#` unencoded: the user part ends at the last `@`.
    let authority = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:[redacted]@{host}"),
            None => before_query.to_owned(),
        },
        None => before_query.to_owned(),
    };
    let query = query.map(|query| {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                    format!("{key}=[redacted]")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(query) => format!("{scheme}://{authority}?{query}"),
        None => format!("{scheme}://{authority}"),
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<DatabaseUrl, Self::Err> {
        Ok(DatabaseUrl(text.to_owned()))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

/// Options that apply to whichever backend the URL names.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// PostgreSQL only: a schema to create and use (benchmarks use a fresh one).
    pub schema: Option<String>,
    pub queue: QueueConfig,
    /// The store will serve requests: on SQLite, which one process serves (its locks and
    /// in-flight claims live in that process's memory), refuse to start when another process
    /// already serves the same file.
    pub serving: bool,
}

/// Locks `<database>.serving` for this process until it exits, or says which file another
/// serving process holds. Other commands (admin, audit, keys) still open the database beside
/// it.
pub(crate) fn lock_for_serving(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Named after the file itself, so a second path to it (a link, `./`) finds the same lock.
    let real = std::fs::canonicalize(path).or_else(|_| {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = std::fs::canonicalize(dir.unwrap_or(std::path::Path::new(".")))?;
        Ok::<_, std::io::Error>(dir.join(path.file_name().unwrap_or_default()))
    });
    let real = real.with_context(|| format!("resolving {}", path.display()))?;
    let mut name = real.into_os_string();
    name.push(".serving");
    let lock_path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another koban process already serves {} (it holds {}); a SQLite database is served by one process; use PostgreSQL for several instances",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

/// Something to run with a store, whichever backend it is.
pub trait WithStore {
    type Output;
    fn run<S: LedgerStore>(
        self,
        store: S,
    ) -> impl Future<Output = anyhow::Result<Self::Output>> + Send;
}

/// The backend a database URL names: the one place that decides it.
pub enum Backend<'a> {
    Sqlite(std::path::PathBuf),
    Postgres(&'a str),
}

impl<'a> Backend<'a> {
    pub fn of(url: &'a str) -> anyhow::Result<Backend<'a>> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite(path_from_url(url)?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres(url))
        } else {
            bail!("unsupported database URL: use sqlite://PATH or postgres://...")
        }
    }
}

/// Opens the backend named by `url` (applying migrations) and runs `job` with it.
pub async fn open<J: WithStore>(
    url: &str,
    options: BackendOptions,
    job: J,
) -> anyhow::Result<J::Output> {
    match Backend::of(url)? {
        Backend::Sqlite(path) => {
            let _serving = match options.serving {
                true => Some(lock_for_serving(&path)?),
                false => None,
            };
            let config = SqliteConfig {
                queue: options.queue,
                clock: Clock::system(),
            };
            let store = SqliteStore::open(&path, config)
                .with_context(|| format!("opening {}", path.display()))?;
            job.run(store).await
        }
        Backend::Postgres(url) => {
            let config = PgConfig {
                queue: options.queue,
                schema: options.schema,
                ..PgConfig::default()
            };
            let store = PgStore::connect(url, config)
                .await
                .context("connecting to PostgreSQL")?;
            job.run(store).await
        }
    }
}

/// Applies migrations only; returns how many were new.
pub async fn migrate(url: &str) -> anyhow::Result<usize> {
    match Backend::of(url)? {
        Backend::Sqlite(path) => Ok(SqliteStore::migrate_only(&path)?),
        Backend::Postgres(url) => {
            let pool = koban_store_postgres::connect_pool(url, &PgConfig::default()).await?;
            Ok(koban_store_postgres::migrate(&pool).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DatabaseUrl;

    #[test]
    fn urls_print_without_passwords() {
        let url: DatabaseUrl = "postgres://koban:s3cret@db.internal:5432/koban"
            .parse()
            .unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://koban:[redacted]@db.internal:5432/koban"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.expose(),
            "postgres://koban:s3cret@db.internal:5432/koban"
        );
        let plain: DatabaseUrl = "sqlite://./koban-data/koban.db".parse().unwrap();
        assert_eq!(plain.redacted(), "sqlite://./koban-data/koban.db");
        for (url, shown) in [
            (
                "postgres://koban@db/k?sslmode=require&password=s3cret",
                "postgres://koban@db/k?sslmode=require&password=[redacted]",
            ),
            (
                "smtps://u:pa/ss#x@mail.example:465",
                "smtps://u:[redacted]@mail.example:465",
            ),
            (
                "smtps://u%40x:p%3Ass@mail.example",
                "smtps://u%40x:[redacted]@mail.example",
            ),
            (
                "smtp://mail.example:25?tls=required",
                "smtp://mail.example:25?tls=required",
            ),
        ] {
            assert_eq!(super::redact_url(url), shown);
            assert_eq!(super::url_has_secret(url), url != shown, "{url}");
        }
    }
}
