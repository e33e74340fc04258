//! A card-network simulator: the network's signed client, and `koban card-network`, which
//! drives one card through the message sequences a real network sends (a purchase refunded in
//! part, a split shipment, a hotel stay with an increment, a cancelled order) against a running
//! server, printing each message and its answer as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use hyper::Method;
use koban_cards::card_keys::{CardKeys, network_signature};
use serde_json::{Value, json};

use crate::bench_api::Conn;

/// The card network's side of the API: every message signed with the network secret.
pub(crate) struct NetworkClient {
    conn: Conn,
    addr: SocketAddr,
    network_id: String,
    secret: [u8; 32],
}

impl NetworkClient {
    pub(crate) async fn open(addr: SocketAddr, keys: &CardKeys) -> anyhow::Result<NetworkClient> {
        Ok(NetworkClient {
            conn: Conn::open(addr).await?,
            addr,
            network_id: keys.network_id().to_owned(),
            secret: *keys.network_secret(),
        })
    }

    /// Sends one signed message; reconnects once if the connection was closed. The retry is
    /// signed anew in a later second: the server refuses an identical signed message twice.
    pub(crate) async fn send(&mut self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let text = body.to_string();
        let first = unix_s()?;
        match self.send_signed(path, &text, first).await {
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.conn = Conn::open(self.addr).await?;
                let mut now = unix_s()?;
                while now == first {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    now = unix_s()?;
                }
                self.send_signed(path, &text, now).await
            }
        }
    }

    async fn send_signed(
        &mut self,
        path: &str,
        text: &str,
        timestamp: i64,
    ) -> anyhow::Result<(u16, Value)> {
        let signature = network_signature(&self.secret, timestamp, "POST", path, text.as_bytes());
        let timestamp = timestamp.to_string();
        let headers = [
            ("koban-network-id", self.network_id.as_str()),
            ("koban-timestamp", timestamp.as_str()),
            ("koban-signature", signature.as_str()),
        ];
        self.conn
            .send_text(Method::POST, path, None, &headers, text.to_owned())
            .await
    }
}

fn unix_s() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}

#[derive(Args, Debug)]
pub struct CardNetworkArgs {
    /// The server (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The card key file holding the network credential (with `serve --dev`:
    /// koban-data/card-keys.dev.json).
    #[arg(
        long,
        env = "KOBAN_CARD_KEYS_FILE",
        default_value = "./koban-data/card-keys.dev.json"
    )]
    pub card_keys_file: PathBuf,
    /// The card number, as revealed to its holder.
    #[arg(long)]
    pub number: String,
    /// Expiry as MM/YYYY.
    #[arg(long)]
    pub expiry: String,
    /// The security code, as revealed to its holder.
    #[arg(long)]
    pub security_code: String,
    /// Currency of the card's wallet.
    #[arg(long, default_value = "JPY")]
    pub currency: String,
}

fn masked(number: &str) -> String {
    let keep = number.len().saturating_sub(4);
    format!("{}••••••{}", &number[..6.min(keep)], &number[keep..])
}

pub async fn run(args: CardNetworkArgs) -> anyhow::Result<ExitCode> {
    let keys = crate::keys::load(&args.card_keys_file)?;
    let authority = args.url.trim_start_matches("http://").trim_end_matches('/');
    let addr = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {}", args.url))?
        .next()
        .ok_or_else(|| anyhow!("{} has no address", args.url))?;
    if !addr.ip().is_loopback() {
        bail!("the simulator only sends traffic to loopback addresses");
    }
    let (month, year) = args
        .expiry
        .split_once('/')
        .and_then(|(m, y)| Some((m.parse::<i64>().ok()?, y.parse::<i64>().ok()?)))
        .ok_or_else(|| anyhow!("--expiry is MM/YYYY"))?;
    let mut client = NetworkClient::open(addr, &keys).await?;
    let run = uuid::Uuid::now_v7().simple().to_string()[..12].to_owned();
    let card = json!({
        "pan": args.number, "exp_month": month, "exp_year": year,
        "security_code": args.security_code, "currency": args.currency,
    });
    let mut all_ok = true;
    let step = |name: &str, path: &str, answer: &(u16, Value)| {
        let ok = answer.0 == 200;
        println!(
            "{}",
            json!({ "step": name, "path": path, "status": answer.0, "answer": answer.1 })
        );
        ok
    };
    // (name, authorized amount, follow-up steps of (kind, amount)). Four authorizations and one
    // increment: the built-in rule card.velocity declines a customer's authorization after five
    // within a minute (increments count), as a card-testing run would make.
    type Scenario<'a> = (&'a str, i64, &'a [(&'a str, i64)]);
    let scenarios: [Scenario; 4] = [
        (
            "purchase_then_refund",
            1_500,
            &[("clear_final", 1_500), ("refund", 500)],
        ),
        (
            "split_shipment",
            3_000,
            &[("clear", 1_000), ("clear_final", 2_000)],
        ),
        (
            "hotel_stay",
            5_000,
            &[("increment", 2_000), ("clear_final", 6_500)],
        ),
        ("cancelled_order", 800, &[("reverse", 0)]),
    ];
    println!(
        "{}",
        json!({ "card": masked(&args.number), "server": args.url })
    );
    for (n, (scenario, amount, steps)) in scenarios.iter().enumerate() {
        let mut request = card.clone();
        request["network_ref"] = json!(format!("sim-{run}-{n}"));
        request["amount"] = json!(amount);
        request["merchant_id"] = json!("sim-merchant-1");
        request["merchant_name"] = json!(format!("Simulator {scenario}"));
        request["mcc"] = json!(if *scenario == "hotel_stay" {
            "7011"
        } else {
            "5732"
        });
        request["country"] = json!("JP");
        request["channel"] = json!("online");
        request["client_ip"] = json!("127.0.0.1");
        let path = "/v1/network/authorizations";
        let answer = client.send(path, &request).await?;
        all_ok &= step(&format!("{scenario}: authorize {amount}"), path, &answer);
        let Some(id) = answer.1["authorization_id"].as_str().map(str::to_owned) else {
            continue;
        };
        if answer.1["approved"] != json!(true) {
            all_ok = false;
            continue;
        }
        for (i, (what, value)) in steps.iter().enumerate() {
            let op = format!("sim-{run}-{n}-{i}");
            let (path, body) = match *what {
                "clear" | "clear_final" => (
                    format!("/v1/network/authorizations/{id}/clearings"),
                    json!({ "clearing_id": op, "amount": value, "final": *what == "clear_final" }),
                ),
                "increment" => (
                    format!("/v1/network/authorizations/{id}/increments"),
                    json!({ "increment_id": op, "amount": value }),
                ),
                "reverse" => (
                    format!("/v1/network/authorizations/{id}/reversals"),
                    json!({ "reversal_id": op }),
                ),
                _ => (
                    format!("/v1/network/authorizations/{id}/refunds"),
                    json!({ "refund_id": op, "amount": value }),
                ),
            };
            let answer = client.send(&path, &body).await?;
            all_ok &= answer.1["approved"] == json!(true);
            step(&format!("{scenario}: {what} {value}"), &path, &answer);
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
