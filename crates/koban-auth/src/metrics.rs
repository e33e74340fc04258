//! Metric names of the identity service.

pub const LOGIN_FAILURES: &str = "koban_auth_failures_total";
pub const LOGIN_SUCCESSES: &str = "koban_auth_logins_total";
pub const THROTTLED: &str = "koban_auth_throttled_total";
pub const HASH_REFUSED: &str = "koban_auth_hash_refused_total";
pub const SECURITY_ALERTS: &str = "koban_security_alerts_total";
pub const ALARM_ACTIVE: &str = "koban_security_alarm_active";
pub const FAILURES_LAST_MINUTE: &str = "koban_auth_failures_last_minute";
pub const OUTBOX_DELIVERED: &str = "koban_outbox_delivered_total";
pub const OUTBOX_FAILED: &str = "koban_outbox_failed_attempts_total";

pub fn describe() {
    metrics::describe_counter!(
        LOGIN_FAILURES,
        "Failed authentication attempts (password or code)."
    );
    metrics::describe_counter!(LOGIN_SUCCESSES, "Successful password sign-ins.");
    metrics::describe_counter!(
        THROTTLED,
        "Attempts refused by throttling before any check, by scope."
    );
    metrics::describe_counter!(
        HASH_REFUSED,
        "Password checks refused because hashing capacity was full."
    );
    metrics::describe_counter!(SECURITY_ALERTS, "Security alerts raised, by kind.");
    metrics::describe_gauge!(
        ALARM_ACTIVE,
        "1 while the global authentication-failure alarm is raised."
    );
    metrics::describe_gauge!(
        FAILURES_LAST_MINUTE,
        "Authentication failures in the last full minute, all instances."
    );
    metrics::describe_counter!(OUTBOX_DELIVERED, "Notifications delivered from the outbox.");
    metrics::describe_counter!(
        OUTBOX_FAILED,
        "Failed delivery attempts (retried with backoff)."
    );
    // Every documented series is on /metrics from the start, at zero, so a dashboard or an
    // alert rule sees 0 rather than no data until the first event.
    for name in [
        LOGIN_FAILURES,
        LOGIN_SUCCESSES,
        HASH_REFUSED,
        OUTBOX_DELIVERED,
        OUTBOX_FAILED,
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::counter!(SECURITY_ALERTS, "kind" => "auth_failure_rate").increment(0);
    metrics::counter!(SECURITY_ALERTS, "kind" => "password_spray").increment(0);
    metrics::counter!(SECURITY_ALERTS, "kind" => "account_lockout").increment(0);
    metrics::gauge!(ALARM_ACTIVE).increment(0.0);
    metrics::gauge!(FAILURES_LAST_MINUTE).increment(0.0);
}
