//! `koban serve`: the HTTP API (from `koban-api`), the hold-expiry sweep, the identity
//! workers (outbox delivery, failure alarm), and a graceful shutdown that finishes every
//! queued batch before the process exits.

use std::time::Duration;

use std::net::SocketAddr;

use anyhow::Context;
use koban_api::{ApiConfig, ApiState};
use koban_store::LedgerStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::{self, BackendOptions, WithStore};
use crate::cli::ServeArgs;

pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KOBAN_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        // The one span is each request's (its id); nothing else opens one.
        .with_current_span(true)
        .with_span_list(false)
        .try_init();
}

/// Installs the Prometheus recorder, with histogram buckets for the ledger's timings and sizes.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use koban_store::metrics::{COMMIT_SECONDS, GROUP_TRANSFERS};
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(COMMIT_SECONDS.into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(GROUP_TRANSFERS.into()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
            ],
        )?
        .install_recorder()
        .context("installing the metrics recorder")
        .inspect(|_| {
            koban_store::metrics::describe();
            koban_auth::metrics::describe();
        })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

struct Serve(ServeArgs, PrometheusHandle);

impl WithStore for Serve {
    type Output = ();

    async fn run<S: LedgerStore>(self, store: S) -> anyhow::Result<()> {
        let Serve(args, metrics) = self;
        let keys =
            crate::identity::master_key(&args.identity.keys, args.database.database_url.expose())?;
        // Bound first: the public URL's default names the port actually listened on.
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let config = args.identity.config(args.dev, Some(addr))?;
        tracing::info!(public_url = %config.public_url, "links in messages start with the public URL");
        let auth = crate::identity::auth_for(&store, keys, config).await?;
        let (stop, stopped) = watch::channel(false);
        let sweeper = tokio::spawn(crate::workers::sweep_holds(
            store.clone(),
            Duration::from_secs(args.hold_sweep_interval_s.max(1)),
            stopped.clone(),
        ));
        let mut pay = koban_pay::Payments::new(
            store.clone(),
            auth.clone(),
            koban_pay::PayConfig {
                tls_ca_pem: args.identity.tls_ca_pem()?,
                ..args.payments.config(args.dev)?
            },
        )
        .map_err(|e| anyhow::anyhow!("payments: {e}"))?;
        let rules = koban_pay::RiskRules::load(args.payments.risk_rules.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(rules = rules.current().rules().len(), digest = %rules.current().digest(), "risk rules loaded");
        pay = pay.with_risk_rules(rules);
        // A set an operator put in force on any instance wins over this instance's file.
        match pay.sync_risk_rules().await {
            Ok(Some(set)) => tracing::info!(
                published = pay.risk_rules().published(),
                digest = %set.digest(),
                "risk rules: the set published on the database is in force; reload to publish this instance's file instead"
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "risk rules: the published set was not taken"),
        }
        let cards = cards_for(&args, pay.clone()).await?;
        pay.open_issuer_accounts()
            .await
            .map_err(|e| anyhow::anyhow!("opening the issuer's accounts: {e}"))?;
        if pay.config().sandbox {
            tracing::warn!("the sandbox bank and the test-money faucet are on: not for real money");
        }
        tokio::spawn(reload_on_sighup(pay.clone()));
        let anchor = args.audit_anchor_file.clone().unwrap_or_else(|| {
            crate::identity::data_dir(args.database.database_url.expose())
                .join(crate::workers::ANCHOR_FILE)
        });
        tracing::info!(path = %anchor.display(), "audit checkpoints are anchored in this file");
        let checkpoints = tokio::spawn(crate::workers::checkpoint_audit(
            auth.clone(),
            anchor,
            Duration::from_secs(args.audit_checkpoint_interval_s.max(1)),
            stopped.clone(),
        ));
        let workers = tokio::spawn(crate::workers::run_workers::<S>(
            auth.clone(),
            pay.clone(),
            cards.clone(),
            stopped,
        ));
        if args.dev {
            tracing::warn!(
                "development mode: cookies are not Secure and /v1/dev/mailbox shows every message"
            );
        }
        tracing::info!(%addr, backend = store.backend(), "listening");
        let state = ApiState {
            store: store.clone(),
            auth,
            pay,
            cards,
            metrics: Some(metrics),
            config: ApiConfig {
                dev: args.dev,
                trust_forwarded_for: args.trust_forwarded_for,
            },
        };
        let app = koban_web::app(state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?;
        tracing::info!("shutting down: finishing queued batches");
        let _ = stop.send(true);
        let _ = sweeper.await;
        let _ = workers.await;
        let _ = checkpoints.await;
        store.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The card subdomain of a server: its keys from the key file (or, in development, a
/// development key file made if missing), checked against the cards the database holds. A
/// server that cannot unseal its cards refuses to start (outside development).
async fn cards_for<S: LedgerStore>(
    args: &ServeArgs,
    pay: koban_pay::Payments<S>,
) -> anyhow::Result<koban_cards::Cards<S>> {
    let mut cards = koban_cards::Cards::new(pay, args.payments.card_config()?);
    match (&args.payments.card_keys_file, args.dev) {
        (Some(path), _) => cards = cards.with_keys(crate::keys::load(path)?),
        (None, true) => {
            let path = crate::keys::dev_key_file(args.database.database_url.expose());
            tracing::warn!(path = %path.display(), "development mode: development card keys (created if missing); never for real cards");
            cards = cards.with_keys(crate::keys::load_or_create_dev(&path)?);
        }
        (None, false) => {
            tracing::info!("card issuing is off: start with --card-keys-file to turn it on")
        }
    }
    let missing = cards
        .missing_card_keys()
        .await
        .map_err(|e| anyhow::anyhow!("checking card keys: {e}"))?;
    if !missing.is_empty() {
        if args.dev {
            tracing::warn!(
                ?missing,
                "cards from an earlier run are sealed under keys this run lacks"
            );
        } else if args.payments.card_keys_file.is_none() {
            anyhow::bail!(
                "the database holds issued cards: start with --card-keys-file (refusing to run without card keys)"
            );
        } else {
            anyhow::bail!(
                "cards are sealed under card key ids {missing:?} that the card key file lacks; restore them"
            );
        }
    }
    Ok(cards)
}

/// Reloads the risk rules on every SIGHUP (an invalid file is logged and the live set stays).
async fn reload_on_sighup<S: LedgerStore>(pay: koban_pay::Payments<S>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be watched: reload the risk rules through the API");
            return;
        };
        while hangups.recv().await.is_some() {
            match pay.reload_risk_rules("system:sighup").await {
                Ok(set) => {
                    tracing::info!(rules = set.rules().len(), digest = %set.digest(), "risk rules reloaded")
                }
                Err(error) => {
                    tracing::error!(%error, "risk rules not reloaded; the previous set stays")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = pay;
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let metrics = install_metrics()?;
    let url = args.database.database_url.expose().to_owned();
    let options = BackendOptions {
        serving: true,
        ..BackendOptions::default()
    };
    backend::open(&url, options, Serve(args, metrics)).await
}
