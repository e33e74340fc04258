//! Starting the binary, talking HTTP to it, and cleaning up after it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn koban() -> Command {
    Command::new(env!("CARGO_BIN_EXE_koban"))
}

pub fn postgres_url() -> String {
    std::env::var("KOBAN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether PostgreSQL tests should run: in CI they must; elsewhere they are skipped, loudly,
/// when nothing listens on the configured address.
pub fn postgres_available() -> bool {
    let reachable = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().expect("address"),
        Duration::from_secs(2),
    )
    .is_ok()
        || std::env::var("KOBAN_TEST_DATABASE_URL").is_ok();
    if !reachable && std::env::var("CI").is_err() {
        eprintln!(
            "SKIPPED: no PostgreSQL reachable; set KOBAN_TEST_DATABASE_URL to run these tests"
        );
        return false;
    }
    true
}

/// A child process that is killed when the test ends, however it ends.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits for the child to exit, at most `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `koban serve` on a free port and returns it with its address, read from the
/// "listening" log line.
pub fn spawn_serve(database_url: &str) -> (ChildGuard, SocketAddr) {
    let (guard, addr, _) = spawn_serve_with(database_url, &[]);
    (guard, addr)
}

/// Like [`spawn_serve`], with extra arguments, also returning every log line it writes.
pub fn spawn_serve_with(
    database_url: &str,
    extra: &[&str],
) -> (ChildGuard, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut child = koban()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("koban starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let guard = ChildGuard(child);
    let mut lines = BufReader::new(stdout).lines();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let addr = loop {
        let line = lines
            .next()
            .expect("koban logged before exiting")
            .expect("readable log");
        logs.lock().unwrap().push(line.clone());
        let entry: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if entry["fields"]["message"] == "listening" {
            break entry["fields"]["addr"]
                .as_str()
                .expect("addr logged")
                .parse()
                .expect("an address");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    (guard, addr, logs)
}

pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// A minimal HTTP/1.1 GET, enough for health and metrics endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], None)
}

/// A minimal HTTP/1.1 request; a body is sent as JSON.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes()).expect("request sent");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("response read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

pub fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// A fresh schema on the test database, and the URL that serves from it.
pub fn fresh_schema(name: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("t_{name}_{}_{}", std::process::id(), nanos % 1_000_000_000);
    let created = std::process::Command::new("psql")
        .args([&postgres_url(), "-qc", &format!("CREATE SCHEMA {schema}")])
        .status()
        .expect("psql runs");
    assert!(created.success(), "the schema could not be created");
    let separator = if postgres_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{separator}options=-c%20search_path%3D{schema}",
        postgres_url()
    );
    (schema, url)
}
