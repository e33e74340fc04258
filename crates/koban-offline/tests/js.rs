//! The browser's offline module (`crates/koban-web/assets/offline.js`, WebCrypto) and this
//! crate agree byte for byte: node reads, verifies and re-encodes what the crate made, its
//! terminal accepts the crate's voucher, and what it signs with keys of its own the crate reads,
//! verifies and accepts. Needs node (CI has it; elsewhere a machine without it skips).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use koban_offline::{
    Challenge, Currency, IssuerKeys, Purse, PurseCertificate, SigningKey, Terminal,
    TerminalCertificate, Voucher,
};

const NOW: u32 = 1_800_000_000;

#[test]
fn the_browser_module_and_the_crate_agree() {
    let ci = std::env::var_os("CI").is_some();
    if Command::new("node").arg("--version").output().is_err() {
        assert!(!ci, "CI must have node");
        eprintln!("skipped: no node");
        return;
    }
    let issuer = SigningKey::generate();
    let keys = IssuerKeys::new([(3, issuer.public())]);
    let till_key = Arc::new(SigningKey::generate());
    let name = "喫茶こばん Kissa Koban";
    let tcert = TerminalCertificate {
        issuer_key: 3,
        terminal: [1; 16],
        merchant: [2; 16],
        terminal_key: till_key.public(),
        currency: Currency::JPY,
        not_after: NOW + 86_400,
        name: name.into(),
        signature: [0; 64],
    }
    .issue(&issuer);
    let terminal = Terminal::new(tcert, till_key, keys.clone(), 86_400, [], NOW);
    let challenge = terminal.challenge(1_200, [7; 12], NOW);
    let device = Arc::new(SigningKey::generate());
    let cert = PurseCertificate {
        issuer_key: 3,
        purse: [4; 16],
        device_key: device.public(),
        currency: Currency::JPY,
        limit: 20_000,
        not_before: NOW - 60,
        not_after: NOW + 3_600,
        serial: 1,
        signature: [0; 64],
    }
    .issue(&issuer);
    let voucher = Purse::new(cert, device)
        .pay(&challenge, &keys, NOW)
        .unwrap();
    let input = serde_json::json!({
        "issuer_number": 3,
        "issuer_public": STANDARD.encode(issuer.public()),
        "issuer_pkcs8": STANDARD.encode(issuer.pkcs8()),
        "now": NOW,
        "name": name,
        "challenge": challenge.to_text(),
        "voucher": voucher.to_text(),
    });
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/driver.mjs");
    let mut child = Command::new("node")
        .arg(driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"].as_array().unwrap().len(), 13, "{report}");

    // What the browser made: the crate reads it, verifies it, and its terminal accepts it.
    let js_challenge = Challenge::from_text(report["challenge"].as_str().unwrap()).unwrap();
    js_challenge.verify(&keys, NOW).unwrap();
    assert_eq!(js_challenge.terminal.name, "ブラウザ Browser Shop");
    assert_eq!(
        js_challenge.to_text(),
        report["challenge"].as_str().unwrap()
    );
    let js_voucher = Voucher::from_text(report["voucher"].as_str().unwrap()).unwrap();
    js_voucher.verify_signatures(&keys).unwrap();
    assert_eq!(
        (js_voucher.content.counter, js_voucher.content.cumulative),
        (1, 1_500)
    );
    let mut till = Terminal::new(
        js_challenge.terminal.clone(),
        Arc::new(SigningKey::generate()),
        keys,
        86_400,
        [],
        NOW,
    );
    till.accept(&js_challenge, &js_voucher, NOW).unwrap();
}
