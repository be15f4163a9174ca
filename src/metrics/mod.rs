//! Every Prometheus metric the gateway exports, declared here with its help text: the `dalea_`
//! prefix, units in the names, labels bounded by config (route names) or by code (fixed value
//! lists, never paths or user ids). Every family and every known label value exists from
//! start-up at zero, so dashboards and alerts never see absent series.
//!
//! Hot-path metrics are resolved to their labelled child once, here, and updated with a single
//! atomic operation per request. Values other parts of the gateway already keep (cache sizes,
//! pending activity, notices sent) are read when `/metrics` is scraped ([`Metrics::scrape`]).

mod scrape;
mod store;

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use scrape::Snapshot;
pub use store::MeteredStore;

/// What the proxy decided for a request to a route (`decision` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    Allowed,
    SigninRequired,
    ElevationRequired,
    Denied,
    ApiKey,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 5] = [
        DecisionKind::Allowed,
        DecisionKind::SigninRequired,
        DecisionKind::ElevationRequired,
        DecisionKind::Denied,
        DecisionKind::ApiKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allowed => "allowed",
            DecisionKind::SigninRequired => "signin_required",
            DecisionKind::ElevationRequired => "elevation_required",
            DecisionKind::Denied => "denied",
            DecisionKind::ApiKey => "api_key",
        }
    }
}

/// The `route` label of requests that matched no route (404, 400).
pub const NO_ROUTE: &str = "_none";
/// `class` label values of upstream responses; `error` is no response at all.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
/// `cache` label values.
const CACHES: [&str; 2] = ["session", "api_key"];
/// `lane` label values (see `session::activity`).
pub const LANES: [&str; 2] = ["sessions", "api_keys"];
/// `kind` label values of received revocation notices.
const NOTICE_KINDS: [&str; 4] = ["revoked", "changed", "api_key_revoked", "malformed"];
/// Sign-in methods known at start-up (`method` label of sign-ins).
const SIGNIN_METHODS: [&str; 2] = ["password", "passkey"];
/// `refused`: a provider's identity that the `[oauth]` rules let in as no one; `cancelled`: the
/// person said no at the provider.
const SIGNIN_OUTCOMES: [&str; 6] = ["success", "failure", "throttled", "error", "refused", "cancelled"];
const ELEVATION_METHODS: [&str; 3] = ["totp", "passkey", "password"];
const ELEVATION_OUTCOMES: [&str; 3] = ["success", "failure", "throttled"];
/// `limit` label values: the throttle rules' kinds (`signin_start`: sign-ins started through a
/// provider or with a passkey, per client network).
const LIMITS: [&str; 3] = ["signin", "totp", "signin_start"];
/// `result` label values of sign-in notices sent to the `[notify]` webhook.
const WEBHOOK_RESULTS: [&str; 3] = ["delivered", "failed", "dropped"];
/// How recent a request must be for its session to count as active.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(300);

/// Latency buckets from 5 µs (a cached session) to 10 s (a store timing out).
const FAST_BUCKETS: [f64; 19] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0, 2.5, 5.0,
    10.0,
];
/// Upstream responses: 1 ms to 30 s.
const UPSTREAM_BUCKETS: [f64; 14] = [1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Activity flush lag: the flush interval is seconds.
const LAG_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
/// Entries per activity flush.
const BATCH_BUCKETS: [f64; 8] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0, 100_000.0, 200_000.0];

/// One route's metrics, resolved once.
pub struct RouteMetrics {
    decisions: [IntCounter; 5],
    upstream_duration: Histogram,
    upstream_classes: [IntCounter; 6],
}

impl RouteMetrics {
    pub fn decided(&self, decision: DecisionKind) {
        self.decisions[decision as usize].inc();
    }

    /// An upstream answered with `status` after `elapsed`.
    pub fn upstream_answered(&self, status: u16, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.upstream_classes[class].inc();
    }

    /// The upstream gave no response (connect failure, timeout, reset).
    pub fn upstream_failed(&self) {
        self.upstream_classes[5].inc();
    }
}

/// Hits, misses and evictions of one in-memory cache.
#[derive(Debug, Clone)]
pub struct CacheCounters {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub evictions: IntCounter,
}

impl Default for CacheCounters {
    /// Counters registered nowhere (caches built outside a gateway, e.g. in unit tests).
    fn default() -> Self {
        let counter = |name: &str| IntCounter::new(name, name).expect("valid metric name");
        CacheCounters { hits: counter("hits"), misses: counter("misses"), evictions: counter("evictions") }
    }
}

/// One activity lane's flush metrics.
pub struct LaneMetrics {
    pub batch_size: Histogram,
    pub lag: Histogram,
    pub errors: IntCounter,
    pub pending: IntGauge,
}

/// Sign-ins, elevations and throttling.
pub struct AuthMetrics {
    signins: IntCounterVec,
    elevations: IntCounterVec,
    rate_limited: IntCounterVec,
}

impl AuthMetrics {
    /// `method`: `password`, `oauth:<provider>`, `passkey`; `outcome`: see `SIGNIN_OUTCOMES`.
    pub fn signin(&self, method: &str, outcome: &str) {
        self.signins.with_label_values(&[method, outcome]).inc();
    }

    /// Exports every outcome of these further sign-in methods at zero (`oauth:<provider>` for
    /// each configured provider), so they are there before the first sign-in through them.
    pub fn declare_signin_methods(&self, methods: &[String]) {
        let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
        touch_all(&self.signins, &[&methods, &SIGNIN_OUTCOMES]);
    }

    /// `method`: `totp`, `password`; `outcome`: `success`, `failure`, `throttled`.
    pub fn elevation(&self, method: &str, outcome: &str) {
        self.elevations.with_label_values(&[method, outcome]).inc();
    }

    /// An attempt refused by the `limit` rule (`signin`, `totp`, `signin_start`).
    pub fn rate_limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }
}

/// Revocation fan-out through a shared store.
pub struct RevocationMetrics {
    pub sent: IntCounter,
    received: IntCounterVec,
    pub fanout_lag: Histogram,
    pub subscribed: IntGauge,
}

impl RevocationMetrics {
    /// `kind`: `revoked`, `changed`, `api_key_revoked`, `malformed`.
    pub fn received(&self, kind: &str) {
        self.received.with_label_values(&[kind]).inc();
    }
}

/// The sign-in notice webhook (`[notify]`), brought up to date at scrape time from the
/// notifier's own running totals.
struct WebhookMetrics {
    /// In [`WEBHOOK_RESULTS`] order.
    notices: [IntCounter; 3],
    retries: IntCounter,
}

/// Every metric of one gateway, in its own registry (several gateways in one process — the
/// integration tests — do not share counters).
pub struct Metrics {
    registry: Registry,
    routes: Vec<RouteMetrics>,
    no_route: IntCounter,
    pub auth_check: Histogram,
    pub session_cache: CacheCounters,
    pub key_cache: CacheCounters,
    cache_entries: IntGaugeVec,
    store: Arc<store::StoreMetrics>,
    pub lanes: Vec<LaneMetrics>,
    pub revocation: RevocationMetrics,
    sessions_active: IntGauge,
    pub auth: AuthMetrics,
    webhook: WebhookMetrics,
}

/// Registers `metric` and hands it back.
fn reg<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    reg(registry, HistogramVec::new(opts, labels).expect("valid metric"))
}

/// Creates the child of every combination of `values` (so each exists at zero from start-up).
fn touch_all(vec: &IntCounterVec, values: &[&[&str]]) {
    match values {
        [a, b] => a.iter().for_each(|x| b.iter().for_each(|y| drop(vec.with_label_values(&[*x, *y])))),
        [a] => a.iter().for_each(|x| drop(vec.with_label_values(&[*x]))),
        _ => {}
    }
}

impl Metrics {
    /// All families, with children for these routes (config order) and every known label value.
    pub fn new(route_names: &[&str]) -> Metrics {
        let r = Registry::new();
        let build = gauge_vec(&r, "dalea_build_info", "The gateway's version; always 1.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let requests = counter_vec(
            &r,
            "dalea_requests_total",
            "Requests to proxied routes by the gateway's decision (route _none: matched no route).",
            &["route", "decision"],
        );
        let upstream_duration = histogram_vec(
            &r,
            "dalea_upstream_response_duration_seconds",
            "Time from sending a request upstream to receiving its response header.",
            &["route"],
            &UPSTREAM_BUCKETS,
        );
        let upstream = counter_vec(
            &r,
            "dalea_upstream_responses_total",
            "Upstream responses by status class (error: no response — connect failure, timeout, reset).",
            &["route", "class"],
        );
        let routes = route_names
            .iter()
            .map(|name| RouteMetrics {
                decisions: DecisionKind::ALL.map(|d| requests.with_label_values(&[name, d.as_str()])),
                upstream_duration: upstream_duration.with_label_values(&[name]),
                upstream_classes: STATUS_CLASSES.map(|c| upstream.with_label_values(&[name, c])),
            })
            .collect();
        let no_route = requests.with_label_values(&[NO_ROUTE, DecisionKind::Denied.as_str()]);

        let auth_check = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "dalea_auth_check_duration_seconds",
                    "Time to decide a proxied request: credentials → cache or store → decision.",
                )
                .buckets(FAST_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );

        let hits = counter_vec(&r, "dalea_cache_hits_total", "Lookups answered from memory.", &["cache"]);
        let misses =
            counter_vec(&r, "dalea_cache_misses_total", "Lookups that read the store (absent or stale).", &["cache"]);
        let evictions = counter_vec(
            &r,
            "dalea_cache_evictions_total",
            "Entries dropped because the cache was full (read again from the store on next use).",
            &["cache"],
        );
        let cache = |name: &str| CacheCounters {
            hits: hits.with_label_values(&[name]),
            misses: misses.with_label_values(&[name]),
            evictions: evictions.with_label_values(&[name]),
        };
        let (session_cache, key_cache) = (cache(CACHES[0]), cache(CACHES[1]));
        let cache_entries = gauge_vec(&r, "dalea_cache_entries", "Entries in the in-memory cache.", &["cache"]);
        CACHES.iter().for_each(|c| cache_entries.with_label_values(&[c]).set(0));

        let batch = histogram_vec(
            &r,
            "dalea_activity_flush_batch_size",
            "Entries written by one activity flush (last-active times, API key last use).",
            &["lane"],
            &BATCH_BUCKETS,
        );
        let lag = histogram_vec(
            &r,
            "dalea_activity_flush_lag_seconds",
            "Age of the oldest entry an activity flush wrote: how far the stored last-active time trails.",
            &["lane"],
            &LAG_BUCKETS,
        );
        let flush_errors =
            counter_vec(&r, "dalea_activity_flush_errors_total", "Activity flushes the store refused.", &["lane"]);
        let pending = gauge_vec(&r, "dalea_activity_pending", "Activity entries waiting to be written.", &["lane"]);
        let lanes = LANES
            .iter()
            .map(|l| LaneMetrics {
                batch_size: batch.with_label_values(&[l]),
                lag: lag.with_label_values(&[l]),
                errors: flush_errors.with_label_values(&[l]),
                pending: pending.with_label_values(&[l]),
            })
            .collect();

        let revocation = RevocationMetrics {
            sent: reg(
                &r,
                IntCounter::new(
                    "dalea_revocation_notices_sent_total",
                    "Revocation and change notices this replica published to the other replicas.",
                )
                .expect("valid metric"),
            ),
            received: counter_vec(
                &r,
                "dalea_revocation_notices_received_total",
                "Notices received on the revocation channel, by kind.",
                &["kind"],
            ),
            fanout_lag: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "dalea_revocation_fanout_lag_seconds",
                        "Time from publishing a notice to receiving it on the subscription (this replica's own notices).",
                    )
                    .buckets(FAST_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            subscribed: reg(
                &r,
                IntGauge::new(
                    "dalea_revocation_subscribed",
                    "1 while this replica cannot miss a revocation: notices arrive (Redis) or nothing can be missed (embedded store). 0: cached sessions are re-checked with the store on every request.",
                )
                .expect("valid metric"),
            ),
        };
        touch_all(&revocation.received, &[&NOTICE_KINDS]);

        let sessions_active = reg(
            &r,
            IntGauge::new(
                "dalea_sessions_active",
                "Sessions that made a request through this replica in the last 5 minutes.",
            )
            .expect("valid metric"),
        );

        let auth = AuthMetrics {
            signins: counter_vec(
                &r,
                "dalea_signins_total",
                "Sign-in attempts by method and outcome.",
                &["method", "outcome"],
            ),
            elevations: counter_vec(
                &r,
                "dalea_elevations_total",
                "Re-authentications for sensitive actions by method and outcome.",
                &["method", "outcome"],
            ),
            rate_limited: counter_vec(
                &r,
                "dalea_rate_limit_rejections_total",
                "Attempts refused with 429 by a rate limit, before any check.",
                &["limit"],
            ),
        };
        touch_all(&auth.signins, &[&SIGNIN_METHODS, &SIGNIN_OUTCOMES]);
        touch_all(&auth.elevations, &[&ELEVATION_METHODS, &ELEVATION_OUTCOMES]);
        touch_all(&auth.rate_limited, &[&LIMITS]);

        let notices = counter_vec(
            &r,
            "dalea_notify_webhook_notices_total",
            "Sign-in notices (new device, unusual place) for the [notify] webhook by result: delivered (2xx), failed (refused, or out of attempts), dropped (the queue was full, or the gateway stopped first).",
            &["result"],
        );
        let webhook = WebhookMetrics {
            notices: WEBHOOK_RESULTS.map(|result| notices.with_label_values(&[result])),
            retries: reg(
                &r,
                IntCounter::new(
                    "dalea_notify_webhook_retries_total",
                    "Webhook delivery attempts after a notice's first (network errors, timeouts, 408, 429, 5xx).",
                )
                .expect("valid metric"),
            ),
        };

        let store = store::StoreMetrics::register(&r);
        Metrics {
            registry: r,
            routes,
            no_route,
            auth_check,
            session_cache,
            key_cache,
            cache_entries,
            store,
            lanes,
            revocation,
            sessions_active,
            auth,
            webhook,
        }
    }

    /// The metrics of the route at `index` in config order.
    pub fn route(&self, index: usize) -> Option<&RouteMetrics> {
        self.routes.get(index)
    }

    /// A request that matched no route.
    pub fn unrouted(&self) {
        self.no_route.inc();
    }

    /// The metrics of an activity lane (`sessions`, `api_keys`).
    pub fn lane(&self, name: &str) -> Option<&LaneMetrics> {
        LANES.iter().position(|l| *l == name).and_then(|i| self.lanes.get(i))
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Names of every family registered (for checks of dashboards and docs).
    pub fn family_names(&self) -> Vec<String> {
        self.registry.gather().iter().map(|f| f.name().to_string()).collect()
    }
}

/// Shared handle type.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests;
