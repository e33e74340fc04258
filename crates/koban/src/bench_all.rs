//! `koban bench all`: every benchmark with its defaults, each in a process of its own (so one
//! bench's threads, memory and files never weigh on the next), then one table and one JSON
//! document with the fields every bench reports.

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

#[derive(Args, Debug, Clone)]
pub struct AllBenchArgs {
    /// Also run the ledger and the live risk path on this PostgreSQL database (each in a
    /// fresh schema, dropped afterwards).
    #[arg(long)]
    pub postgres: Option<crate::backend::DatabaseUrl>,
    /// Print the JSON document only.
    #[arg(long)]
    pub json: bool,
}

/// The benches, in the order they run: a name for the table and the arguments after `bench`.
fn plan(postgres: Option<&str>) -> Vec<(String, Vec<String>)> {
    let mut plan: Vec<(String, Vec<String>)> = [
        "ledger", "api", "cards", "risk", "login", "pages", "offline",
    ]
    .iter()
    .map(|name| (name.to_string(), vec![name.to_string()]))
    .collect();
    if let Some(url) = postgres {
        for name in ["ledger", "risk"] {
            plan.push((
                format!("{name} (PostgreSQL)"),
                vec![name.into(), "--database-url".into(), url.into()],
            ));
        }
    }
    plan
}

/// The figures of one bench's report that the table shows, in its column order.
const COLUMNS: [&str; 8] = [
    "requests_per_second",
    "latency_ms_p50",
    "latency_ms_p99",
    "errors",
    "invariants_ok",
    "cpu_us_per_op",
    "bytes_written_per_op",
    "seconds",
];

pub async fn all(args: AllBenchArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding this program")?;
    let postgres = args.postgres.as_ref().map(|u| u.expose().to_owned());
    let mut results = Vec::new();
    let mut all_ok = true;
    for (name, bench_args) in plan(postgres.as_deref()) {
        if !args.json {
            // The bench's name, not its arguments: a database URL can hold a password.
            eprintln!("koban bench {name} ...");
        }
        let started = Instant::now();
        let exe = exe.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(exe)
                .arg("bench")
                .args(&bench_args)
                .arg("--json")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
        })
        .await??;
        let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let report = String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Value>(line).ok());
        let mut entry = match report {
            Some(report) => report,
            None => json!({ "failed": format!("no report (exit status {})", output.status) }),
        };
        entry["seconds"] = json!(seconds);
        entry["name"] = json!(name);
        let ok = output.status.success() && entry["invariants_ok"] == json!(true);
        all_ok &= ok;
        results.push(entry);
    }
    let document = json!({ "benches": results });
    if args.json {
        println!("{document}");
    } else {
        println!("{}", table(&results));
        println!("{document}");
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One row per bench: its name and the shared figures (`-` where a bench has none).
fn table(results: &[Value]) -> String {
    let header = [
        "bench",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "invariants",
        "CPU µs/op",
        "written B/op",
        "took s",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for result in results {
        let mut row = vec![result["name"].as_str().unwrap_or("?").to_owned()];
        for column in COLUMNS {
            // The ledger reports transfers per second under its own name.
            let value = match (column, &result[column]) {
                ("requests_per_second", Value::Null) => &result["transfers_per_second"],
                (_, value) => value,
            };
            row.push(match value {
                Value::Null => "-".to_owned(),
                Value::Bool(ok) => if *ok { "ok" } else { "FAILED" }.to_owned(),
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });
        }
        if let Some(failed) = result["failed"].as_str() {
            row.push(failed.to_owned());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    let width = widths.get(i).copied().unwrap_or(0);
                    format!("{cell:<width$}")
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_bench_with_its_shared_figures() {
        let results = vec![
            json!({"name": "ledger", "transfers_per_second": 41000.0, "latency_ms_p50": 1.2,
                   "latency_ms_p99": 2.5, "errors": 0, "invariants_ok": true,
                   "cpu_us_per_op": 30.5, "bytes_written_per_op": 812.0, "seconds": 9.1}),
            json!({"name": "cards", "requests_per_second": 3000.0, "errors": 2,
                   "invariants_ok": false, "seconds": 20.0}),
        ];
        let table = table(&results);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("bench"));
        assert!(lines[1].starts_with("ledger"), "{table}");
        assert!(
            lines[1].contains("41000.0") && lines[1].contains(" ok "),
            "{table}"
        );
        assert!(lines[1].contains("812.0"), "{table}");
        assert!(
            lines[2].contains("FAILED") && lines[2].contains(" - "),
            "{table}"
        );
    }

    #[test]
    fn postgres_adds_the_ledger_and_the_live_risk_path() {
        assert_eq!(plan(None).len(), 7);
        let with = plan(Some("postgres://x"));
        assert_eq!(with.len(), 9);
        assert_eq!(with[7].1, ["ledger", "--database-url", "postgres://x"]);
    }
}
