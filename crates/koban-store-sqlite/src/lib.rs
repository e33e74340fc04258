//! The embedded SQLite backend of the Koban ledger.
//!
//! One writer thread owns the only writing connection (rusqlite, well under a microsecond per
//! statement) and commits groups of batches; reads use a small pool of other connections,
//! which WAL mode lets run beside the writer.
//!
//! Architecture invariant: only the writer thread writes; every write goes through the job
//! queue, so group commit and the "busy" back-pressure apply to all of them.

mod db;
mod sqldb;
mod writer;

pub use sqldb::{SqliteSql, SqliteTx};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use koban_ledger::{
    Account, AccountId, AccountRejection, Balance, NewAccount, StateChange, StateChangeRejection,
    Timestamp, Transfer, TransferId, TransferRequest,
};
use koban_store::queue::{JobQueue, QueueConfig, job_queue};
use koban_store::{AuditReport, Clock, LedgerStore, Page, PageRequest, StoreError, SubmitResult};
use rusqlite::Connection;

/// Reader connections kept open for reuse.
const READERS_KEPT_MAX: usize = 8;

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    pub queue: QueueConfig,
    pub clock: Clock,
}

impl Default for SqliteConfig {
    fn default() -> SqliteConfig {
        SqliteConfig {
            queue: QueueConfig::default(),
            clock: Clock::system(),
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    queue: JobQueue,
    readers: Arc<Readers>,
    sql: SqliteSql,
    checkpointer: Arc<Checkpointer>,
}

/// The checkpointer thread: it stops at `shutdown` (which waits for it), or when the last
/// clone of the store is dropped.
struct Checkpointer {
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Checkpointer {
    /// Stops the thread and, with `wait`, waits until it has closed its connection.
    fn stop(&self, wait: bool) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let (true, Some(thread)) = (wait, thread) {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// How often the checkpointer copies the WAL's new pages into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts the thread that checkpoints the WAL (`PRAGMA wal_checkpoint(PASSIVE)`) every
/// [`CHECKPOINT_EVERY`] on a connection of its own, so that neither the ledger's writer nor
/// a request's commit stops to copy pages and fsync the database file (SQLite's automatic
/// checkpoint runs inside whichever commit crosses its threshold). A passive checkpoint
/// waits for nobody; a page written many times between two checkpoints is copied once.
/// Durability is SQLite's own: the WAL is synced before its pages are copied and the
/// database file after, and the WAL restarts only once every frame is in the file.
fn start_checkpointer(path: &Path) -> Result<Arc<Checkpointer>, StoreError> {
    let conn = db::connect(path)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("koban-sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(error = %error, "a WAL checkpoint failed; it is tried again");
                }
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start the checkpointer: {e}")))?;
    Ok(Arc::new(Checkpointer {
        stop: Mutex::new(Some(stop)),
        thread: Mutex::new(Some(thread)),
    }))
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// The file path of a `sqlite://` URL: `sqlite://./dir/file.db` or `sqlite:///abs/file.db`.
pub fn path_from_url(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or(StoreError::Invalid(
            "a SQLite database URL starts with sqlite://",
        ))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Err(StoreError::Invalid(
            "the SQLite ledger needs a file path, such as sqlite://./koban-data/koban.db",
        ));
    }
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations, and starts the
    /// writer thread.
    pub fn open(path: &Path, config: SqliteConfig) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut conn = db::connect(path)?;
        db::migrate(&mut conn)?;
        let (queue, receiver) = job_queue(config.queue);
        let writer = writer::Writer {
            conn,
            clock: config.clock,
            receiver,
            accounts: writer::AccountCache::default(),
        };
        std::thread::Builder::new()
            .name("koban-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let readers = Arc::new(Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        });
        let sql = SqliteSql::open(path)?;
        Ok(SqliteStore {
            queue,
            readers,
            sql,
            checkpointer: start_checkpointer(path)?,
        })
    }

    /// Applies migrations and returns how many were new, without starting anything.
    pub fn migrate_only(path: &Path) -> Result<usize, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        db::migrate(&mut db::connect(path)?)
    }

    /// Writes a consistent copy of the database at `path` to `dest` while it is in use
    /// (`VACUUM INTO` reads one snapshot; writers go on meanwhile), through a partial file of
    /// this process's own, synced and then linked into place, so `dest` is whole or absent and
    /// never replaces a file. Returns the copy's size in bytes.
    pub fn backup_into(path: &Path, dest: &Path) -> Result<u64, StoreError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Database(format!("{what} {}: {e}", dest.display()))
        };
        if dest.exists() {
            return Err(StoreError::Database(format!(
                "{} exists already; give a new file",
                dest.display()
            )));
        }
        if !path.exists() {
            return Err(StoreError::Database(format!(
                "no database at {}",
                path.display()
            )));
        }
        // A name of this backup's own, so two backups to one place never share it.
        let mut partial = dest.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = PathBuf::from(partial);
        if partial.exists() {
            return Err(StoreError::Database(format!(
                "{} exists: another backup is writing it",
                partial.display()
            )));
        }
        let conn = open_read_only(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db::db_error)?;
        let target = partial
            .to_str()
            .ok_or_else(|| fail("the path is not UTF-8:", &"use another name"))?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(|e| fail("writing", &e))?;
        drop(conn);
        let file = std::fs::File::open(&partial).map_err(|e| fail("opening", &e))?;
        file.sync_all().map_err(|e| fail("syncing", &e))?;
        let size = file.metadata().map_err(|e| fail("reading", &e))?.len();
        // A link, unlike a rename, never replaces a file that appeared meanwhile.
        let linked = std::fs::hard_link(&partial, dest);
        let _ = std::fs::remove_file(&partial);
        linked.map_err(|e| fail("putting the backup at", &e))?;
        sync_dir(dest)?;
        Ok(size)
    }

    /// Moves everything in the write-ahead log of the database at `path` into the file itself
    /// and empties the log (`PRAGMA wal_checkpoint(TRUNCATE)`), so the file alone holds the
    /// whole database. Fails if another connection keeps it from finishing.
    pub fn checkpoint(path: &Path) -> Result<(), StoreError> {
        let conn = db::connect(path)?;
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(db::db_error)?;
        if busy != 0 {
            return Err(StoreError::Database(format!(
                "{} is in use: its log could not be checkpointed",
                path.display()
            )));
        }
        Ok(())
    }

    /// SQLite's own check of every page and index of the file at `path` (`PRAGMA
    /// integrity_check`): the problems it found, at most 20, or none.
    pub fn integrity_problems(path: &Path) -> Result<Vec<String>, StoreError> {
        let conn = open_read_only(path)?;
        let mut statement = conn
            .prepare("PRAGMA integrity_check(20)")
            .map_err(db::db_error)?;
        let found = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(db::db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db::db_error)?;
        Ok(found.into_iter().filter(|line| line != "ok").collect())
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match idle {
                Some(conn) => conn,
                None => db::connect(&readers.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < READERS_KEPT_MAX
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Database("reader task failed".into()))?
    }

    /// A point read (one row by its key) on the calling thread: it takes microseconds from
    /// the page cache, less than handing the work to a blocking thread and back.
    fn read_point<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .readers
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => db::connect(&self.readers.path)?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.readers.idle.lock()
            && idle.len() < READERS_KEPT_MAX
        {
            idle.push(conn);
        }
        result
    }
}

impl LedgerStore for SqliteStore {
    type Sql = SqliteSql;

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn sql(&self) -> SqliteSql {
        self.sql.clone()
    }

    async fn create_accounts(
        &self,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Result<Account, AccountRejection>>, StoreError> {
        self.queue.create_accounts(accounts).await
    }

    async fn change_account_state(
        &self,
        id: AccountId,
        change: StateChange,
    ) -> Result<Result<Account, StateChangeRejection>, StoreError> {
        self.queue.change_account_state(id, change).await
    }

    async fn submit(&self, batch: Vec<TransferRequest>) -> SubmitResult {
        self.queue.submit(batch).await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.read_point(move |conn| db::account(conn, id))
    }

    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.read_point(move |conn| db::transfer(conn, id))
    }

    async fn account_transfers(
        &self,
        id: AccountId,
        page: PageRequest,
    ) -> Result<Option<Page>, StoreError> {
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(db::db_error)?;
            let Some(account) = db::account(&tx, id)? else {
                return Ok(None);
            };
            let start = page.cursor.or(account.last_transfer);
            koban_store::history::page(id, start, page.limit(), |t| db::transfer(&tx, t)).map(Some)
        })
        .await
    }

    async fn balance_at(
        &self,
        id: AccountId,
        at: Timestamp,
    ) -> Result<Option<Balance>, StoreError> {
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(db::db_error)?;
            let Some(account) = db::account(&tx, id)? else {
                return Ok(None);
            };
            koban_store::history::balance_at(&account, at, |t| db::transfer(&tx, t))
        })
        .await
    }

    async fn expire_holds(&self, limit: usize) -> Result<usize, StoreError> {
        self.queue.expire_holds(limit).await
    }

    async fn count_transfers_present(&self, ids: Vec<TransferId>) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let mut present = 0u64;
            for id in ids {
                present += u64::from(db::transfer_present(conn, id)?);
            }
            Ok(present)
        })
        .await
    }

    async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.read(db::audit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.queue.is_open() {
            return Err(StoreError::ShuttingDown);
        }
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(db::db_error)
        })
        .await
    }

    async fn shutdown(&self) {
        self.queue.shutdown().await;
        // Its connection is closed when this returns: a caller may then checkpoint the file
        // with TRUNCATE or move it (`koban restore`).
        let checkpointer = self.checkpointer.clone();
        let _ = tokio::task::spawn_blocking(move || checkpointer.stop(true)).await;
    }
}

/// Syncs the directory holding `path`, so a rename into it survives a power loss.
pub fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Database(format!("syncing {}: {e}", dir.display())))
}

/// A read-only connection to the database file at `path`, for whole-file work (backup, checks).
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db::db_error)
}
