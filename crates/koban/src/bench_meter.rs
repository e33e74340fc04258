//! What a benchmark's server costs per operation: CPU time (user + system) and bytes written to
//! storage, read from the kernel's accounting of this process (`/proc/self`). These are steadier
//! than wall-clock rates on a shared machine, and they are what a user pays for each payment.
//!
//! Benchmarks that run a load generator in the same process put the server on a runtime of its
//! own ([`server_runtime`]); the load generator runs on the process's main runtime, whose threads
//! are named [`LOAD_THREAD`]. The server's CPU is then the process's minus those threads' (they
//! live for the whole measurement). Benchmarks without that split say so in `cpu_scope`.

use std::fs;

use serde_json::{Value, json};

/// The name of the main runtime's threads (`cli::run`): in a benchmark, the load generator.
pub const LOAD_THREAD: &str = "koban-main";
/// The name of a benchmark's server runtime threads.
pub const SERVER_THREAD: &str = "koban-server";

/// A runtime for a benchmark's built-in server, apart from the load generator's threads.
pub fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(SERVER_THREAD)
        .build()
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    process_cpu_us: u64,
    load_cpu_us: u64,
    written_bytes: u64,
}

/// Takes the process's figures when created; [`Meter::per_op`] gives the difference per
/// operation.
pub struct Meter {
    start: Sample,
    server_split: bool,
}

impl Meter {
    /// Measures the whole process (store, server and load generator alike).
    pub fn process() -> Meter {
        Meter {
            start: sample(false),
            server_split: false,
        }
    }

    /// Measures the server only: the process minus the load generator's threads.
    pub fn server() -> Meter {
        Meter {
            start: sample(true),
            server_split: true,
        }
    }

    /// The same fields for a server in another process, whose usage this one cannot see.
    pub fn not_measured() -> Value {
        json!({
            "cpu_us_per_op": null,
            "bytes_written_per_op": null,
            "cpu_scope": "not measured: the server is another process",
            "load_cpu_us_per_op": null,
        })
    }

    /// `cpu_us_per_op`, `bytes_written_per_op` and what they cover, for `ops` operations.
    pub fn per_op(&self, ops: u64) -> Value {
        let end = sample(self.server_split);
        let process = end.process_cpu_us.saturating_sub(self.start.process_cpu_us);
        let load = end.load_cpu_us.saturating_sub(self.start.load_cpu_us);
        let written = end.written_bytes.saturating_sub(self.start.written_bytes);
        let (cpu, scope) = if self.server_split {
            (
                process.saturating_sub(load),
                "server: the process minus the load generator's threads",
            )
        } else {
            (process, "the whole process")
        };
        let per = |total: u64| {
            if ops == 0 {
                Value::Null
            } else {
                json!((total as f64 / ops as f64 * 10.0).round() / 10.0)
            }
        };
        json!({
            "cpu_us_per_op": per(cpu),
            "bytes_written_per_op": per(written),
            "cpu_scope": scope,
            "load_cpu_us_per_op": if self.server_split { per(load) } else { Value::Null },
        })
    }
}

/// The process's figures now; the load generator's threads only when they are subtracted.
fn sample(with_load: bool) -> Sample {
    Sample {
        process_cpu_us: process_cpu_us(),
        load_cpu_us: if with_load { load_cpu_us() } else { 0 },
        written_bytes: written_bytes(),
    }
}

/// User + system CPU of the whole process, threads that have ended included.
fn process_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// User + system CPU of the load generator's threads (the main runtime's and the main thread).
fn load_cpu_us() -> u64 {
    let ticks_per_s = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let main = std::process::id().to_string();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, utime, stime)) = thread_stat(&stat)
            && (name == LOAD_THREAD || tid == main)
        {
            ticks += utime + stime;
        }
    }
    ticks * 1_000_000 / ticks_per_s
}

/// The name, user and system ticks of one `/proc/.../stat` line. The name is in parentheses
/// and may itself hold spaces or parentheses, so fields are counted from the last `)`.
fn thread_stat(stat: &str) -> Option<(&str, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (field 3) ... utime is field 14, stime field 15.
    let utime = rest.get(11)?.parse().ok()?;
    let stime = rest.get(12)?.parse().ok()?;
    Some((name, utime, stime))
}

/// Bytes this process caused to be written to storage (`write_bytes` of `/proc/self/io`).
fn written_bytes() -> u64 {
    fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_names() {
        let line = "4242 (koban main) R 1 2 3 4 5 6 7 8 9 10 311 27 0 0 20 0 1 0";
        assert_eq!(thread_stat(line), Some(("koban main", 311, 27)));
        let odd = "7 (a) b) S 1 2 3 4 5 6 7 8 9 10 5 6 0";
        assert_eq!(thread_stat(odd), Some(("a) b", 5, 6)));
        assert_eq!(thread_stat("garbage"), None);
    }

    #[test]
    fn work_done_shows_in_the_process_cpu_and_writes() {
        let meter = Meter::process();
        let mut x = 0u64;
        let began = std::time::Instant::now();
        while began.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        fs::File::open(&path).unwrap().sync_all().unwrap();
        let out = meter.per_op(1);
        let cpu = out["cpu_us_per_op"].as_f64().unwrap();
        assert!(cpu >= 20_000.0, "50 ms of spinning measured as {cpu} µs");
        // The temporary directory is on disk on this machine's kind (tmpfs would count nothing).
        let written = out["bytes_written_per_op"].as_f64().unwrap();
        assert!(
            written >= f64::from(1 << 20),
            "1 MiB synced measured as {written} bytes"
        );
    }
}
