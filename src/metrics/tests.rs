//! Metrics: every family exported at zero from start-up, names and units, the dashboards' queries
//! checked against what the gateway exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::vigilance::notify::NotifyCounts;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_family_and_known_label_value_is_exported_at_zero_from_start() {
    let m = Metrics::new(&["app", "admin"]);
    m.auth.declare_signin_methods(&["oauth:corp".to_string()]);
    let text = m.render();
    for series in [
        r#"dalea_requests_total{decision="allowed",route="app"}"#,
        r#"dalea_requests_total{decision="elevation_required",route="admin"}"#,
        r#"dalea_requests_total{decision="denied",route="_none"}"#,
        r#"dalea_upstream_responses_total{class="error",route="admin"}"#,
        r#"dalea_upstream_response_duration_seconds_count{route="app"}"#,
        "dalea_auth_check_duration_seconds_count",
        r#"dalea_cache_hits_total{cache="api_key"}"#,
        r#"dalea_cache_evictions_total{cache="session"}"#,
        r#"dalea_store_errors_total{op="record_activity"}"#,
        r#"dalea_store_operation_duration_seconds_count{op="get"}"#,
        r#"dalea_activity_flush_batch_size_count{lane="api_keys"}"#,
        r#"dalea_activity_flush_lag_seconds_count{lane="sessions"}"#,
        r#"dalea_activity_pending{lane="sessions"}"#,
        "dalea_revocation_notices_sent_total",
        r#"dalea_revocation_notices_received_total{kind="malformed"}"#,
        "dalea_revocation_fanout_lag_seconds_count",
        "dalea_revocation_subscribed",
        "dalea_sessions_active",
        r#"dalea_signins_total{method="password",outcome="throttled"}"#,
        r#"dalea_signins_total{method="oauth:corp",outcome="refused"}"#,
        r#"dalea_signins_total{method="oauth:corp",outcome="cancelled"}"#,
        r#"dalea_elevations_total{method="totp",outcome="failure"}"#,
        r#"dalea_rate_limit_rejections_total{limit="totp"}"#,
        r#"dalea_rate_limit_rejections_total{limit="signin_start"}"#,
        r#"dalea_notify_webhook_notices_total{result="dropped"}"#,
        "dalea_notify_webhook_retries_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} missing or not zero in:\n{text}");
    }
    assert_eq!(sample(&text, &format!(r#"dalea_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))), Some(1.0));
}

#[test]
fn names_carry_the_prefix_units_and_help() {
    let m = Metrics::new(&["app"]);
    for family in m.registry.gather() {
        let name = family.name();
        assert!(name.starts_with("dalea_"), "{name}");
        assert!(!family.help().is_empty(), "{name} has no help text");
        let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        assert_eq!(counter, name.ends_with("_total"), "{name}: counters, and only counters, end in _total");
        if name.contains("duration") || name.contains("lag") {
            assert!(name.ends_with("_seconds"), "{name}: times are in seconds");
        }
    }
}

#[test]
fn route_metrics_count_decisions_and_status_classes() {
    let m = Metrics::new(&["app"]);
    let app = m.route(0).expect("route 0");
    app.decided(DecisionKind::ApiKey);
    app.decided(DecisionKind::SigninRequired);
    app.decided(DecisionKind::SigninRequired);
    app.upstream_answered(204, Duration::from_millis(3));
    app.upstream_answered(503, Duration::from_millis(3));
    app.upstream_answered(99, Duration::from_millis(3)); // nonsense status: counted as 1xx, not lost
    app.upstream_failed();
    m.unrouted();
    assert!(m.route(1).is_none());
    let text = m.render();
    let get = |s: &str| sample(&text, s);
    assert_eq!(get(r#"dalea_requests_total{decision="api_key",route="app"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_requests_total{decision="signin_required",route="app"}"#), Some(2.0));
    assert_eq!(get(r#"dalea_requests_total{decision="denied",route="_none"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_upstream_responses_total{class="2xx",route="app"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_upstream_responses_total{class="5xx",route="app"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_upstream_responses_total{class="1xx",route="app"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_upstream_responses_total{class="error",route="app"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_upstream_response_duration_seconds_count{route="app"}"#), Some(3.0));
    assert_eq!(get(r#"dalea_upstream_response_duration_seconds_bucket{route="app",le="0.005"}"#), Some(3.0));
}

#[test]
fn scrape_time_values_are_taken_from_the_snapshot() {
    let m = Metrics::new(&["app"]);
    let snap = |sent| Snapshot {
        session_cache_entries: 7,
        key_cache_entries: 2,
        pending: [5, 1],
        sessions_active: 3,
        notices_sent: sent,
        subscribed: Some(true),
        webhook: NotifyCounts { queued: sent + 1, delivered: sent, failed: 1, dropped: 2, retries: 3 * sent },
    };
    m.scrape(&snap(4));
    let text = m.scrape(&snap(9));
    let get = |s: &str| sample(&text, s);
    assert_eq!(get(r#"dalea_cache_entries{cache="session"}"#), Some(7.0));
    assert_eq!(get(r#"dalea_activity_pending{lane="sessions"}"#), Some(5.0));
    assert_eq!(get("dalea_sessions_active"), Some(3.0));
    assert_eq!(get("dalea_revocation_notices_sent_total"), Some(9.0), "a running total, not the sum of scrapes");
    assert_eq!(get("dalea_revocation_subscribed"), Some(1.0));
    assert_eq!(get(r#"dalea_notify_webhook_notices_total{result="delivered"}"#), Some(9.0));
    assert_eq!(get(r#"dalea_notify_webhook_notices_total{result="failed"}"#), Some(1.0));
    assert_eq!(get(r#"dalea_notify_webhook_notices_total{result="dropped"}"#), Some(2.0));
    assert_eq!(get("dalea_notify_webhook_retries_total"), Some(27.0));
}

/// Every metric name a query of a shipped dashboard uses (histogram series mapped to their family).
fn dashboard_metric_names(json: &serde_json::Value, out: &mut BTreeSet<String>, exprs: &mut usize) {
    match json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(expr)) => {
                        *exprs += 1;
                        out.extend(metric_names(expr));
                    }
                    _ => dashboard_metric_names(v, out, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_metric_names(v, out, exprs)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("dalea_") {
        let word: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + word.len()..];
        names.push(word);
    }
    names
}

#[test]
fn every_metric_a_dashboard_queries_is_exported() {
    let exported: BTreeSet<String> = Metrics::new(&["app"]).family_names().into_iter().collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        dashboards += 1;
        let text = std::fs::read_to_string(&path).expect("readable");
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let (mut used, mut exprs) = (BTreeSet::new(), 0);
        dashboard_metric_names(&json, &mut used, &mut exprs);
        assert!(exprs > 0, "{}: no queries", path.display());
        for name in &used {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| exported.contains(*f)))
                .unwrap_or(name);
            assert!(exported.contains(family), "{}: queries {name}, which the gateway does not export", path.display());
        }
        // Importable anywhere: the datasource is chosen on import, never a fixed uid.
        assert!(!text.contains("\"uid\": \"prometheus\""), "{}: hard-coded datasource", path.display());
        assert!(text.contains("${datasource}"), "{}: datasource is not the variable", path.display());
    }
    assert!(dashboards >= 4, "expected the four dashboards in {}", dir.display());
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(dalea_auth_check_duration_seconds_bucket{instance=~"$instance"}[5m]))) / dalea_x"#,
    );
    assert_eq!(names, ["dalea_auth_check_duration_seconds_bucket", "dalea_x"]);
}
