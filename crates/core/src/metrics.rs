//! Counters and histograms, named by the Prometheus conventions (the unit
//! and `_total` in the name: `*_requests_total`, `*_overhead_seconds` =
//! total − upstream time…) so any dashboard reads them without a mapping, with
//! low-cardinality labels only (route, status class, error code, the kind
//! of GigaChat call; model family never; no identities).
//!
//! How each platform takes them:
//! - the local / self-hosted server serves the Prometheus text format at
//!   `GET /metrics` ([`render_prometheus`]);
//! - on AWS Lambda each request also writes one CloudWatch Embedded Metric
//!   Format line to stdout ([`emf_line`]), which CloudWatch turns into
//!   metrics with no agent and no extra dependency;
//! - on Vercel, where neither exists, the per-request JSON log line carries
//!   the same numbers for log drains to aggregate.
//!
//! One registry per process (the proxy itself is one per process).

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::cache::CacheOutcome;
use crate::endpoint::Endpoint;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    endpoint_requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    overhead: HistogramVec,
    first_byte: HistogramVec,
    errors: IntCounterVec,
    tokens_input: IntCounterVec,
    tokens_output: IntCounterVec,
    tokens_charged: IntCounterVec,
    ratelimited: IntCounterVec,
    cache: IntCounterVec,
    oauth_refresh: IntCounterVec,
    stream_disconnects: IntCounterVec,
    retries: IntCounterVec,
    /// The series every request touches, looked up once per route at
    /// start-up: `with_label_values` hashes the labels and takes a lock on
    /// each call, five times per request otherwise.
    routes: Vec<RouteSeries>,
    /// `gigachat_proxy_endpoint_requests_total` by status class, for each
    /// kind of call at its index in [`Endpoint::ALL`], looked up once at
    /// start-up for the same reason.
    endpoints: Vec<[IntCounter; 5]>,
}

const ROUTES: [&str; 6] = ["api", "openai", "chat", "oauth", "health", "none"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

struct RouteSeries {
    route: &'static str,
    requests: [IntCounter; 5],
    duration: Histogram,
    upstream: Histogram,
    overhead: Histogram,
    first_byte: Histogram,
}

impl RouteSeries {
    fn new(m: &Metrics, route: &'static str) -> Self {
        Self {
            route,
            requests: STATUS_CLASSES.map(|class| m.requests.with_label_values(&[route, class])),
            duration: m.request_duration.with_label_values(&[route]),
            upstream: m.upstream_duration.with_label_values(&[route]),
            overhead: m.overhead.with_label_values(&[route]),
            first_byte: m.first_byte.with_label_values(&[route]),
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    registry.register(Box::new(counter.clone())).ok()?;
    Some(counter)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> Option<HistogramVec> {
    let histogram = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .ok()?;
    registry.register(Box::new(histogram.clone())).ok()?;
    Some(histogram)
}

impl Metrics {
    fn new() -> Option<Self> {
        let r = Registry::new();
        let mut metrics = Self {
            routes: Vec::new(),
            endpoints: Vec::new(),
            requests: counter(
                &r,
                "gigachat_proxy_requests_total",
                "Requests answered, by route and status class",
                &["route", "status"],
            )?,
            // A counter of its own: a label added to the one above would
            // change every existing `route` series' identity.
            endpoint_requests: counter(
                &r,
                "gigachat_proxy_endpoint_requests_total",
                "API calls answered, by kind of GigaChat call and status class",
                &["endpoint", "status"],
            )?,
            request_duration: histogram(
                &r,
                "gigachat_proxy_request_duration_seconds",
                "Time to the end of the answer (streams included)",
                LATENCY_BUCKETS,
                &["route"],
            )?,
            upstream_duration: histogram(
                &r,
                "gigachat_proxy_upstream_duration_seconds",
                "Time GigaChat took to answer with headers, retries included",
                LATENCY_BUCKETS,
                &["route"],
            )?,
            overhead: histogram(
                &r,
                "gigachat_proxy_overhead_seconds",
                "The proxy's own time before the response headers: total minus upstream",
                OVERHEAD_BUCKETS,
                &["route"],
            )?,
            first_byte: histogram(
                &r,
                "gigachat_proxy_first_byte_seconds",
                "Time to the first body byte sent to the client",
                LATENCY_BUCKETS,
                &["route"],
            )?,
            // Every error the proxy answered with itself, whatever its
            // status (a 404 route, a 429 limit, a 502 from an unreachable
            // GigaChat); GigaChat's own error answers pass through uncounted.
            errors: counter(
                &r,
                "gigachat_proxy_errors_total",
                "Requests the proxy answered with one of its own errors, by error code",
                &["code"],
            )?,
            tokens_input: counter(
                &r,
                "gigachat_proxy_tokens_input_total",
                "Prompt tokens GigaChat reported",
                &["route"],
            )?,
            tokens_output: counter(
                &r,
                "gigachat_proxy_tokens_output_total",
                "Completion tokens GigaChat reported",
                &["route"],
            )?,
            tokens_charged: counter(
                &r,
                "gigachat_proxy_tokens_charged_total",
                "Tokens charged to callers' token budgets (usage, or the estimate of an answer cut short)",
                &["route"],
            )?,
            ratelimited: counter(
                &r,
                "gigachat_proxy_ratelimited_total",
                "Requests refused by a rate or stream limit",
                &["route"],
            )?,
            cache: counter(
                &r,
                "gigachat_proxy_cache_total",
                "Response cache lookups, by outcome (hit/miss)",
                &["outcome"],
            )?,
            oauth_refresh: counter(
                &r,
                "gigachat_proxy_oauth_refresh_total",
                "GigaChat OAuth token fetches, by result",
                &["result"],
            )?,
            stream_disconnects: counter(
                &r,
                "gigachat_proxy_stream_disconnects_total",
                "Streams the client left before their end",
                &["route"],
            )?,
            retries: counter(
                &r,
                "gigachat_proxy_upstream_retries_total",
                "Upstream attempts repeated after a transient failure",
                &["route"],
            )?,
            registry: r,
        };
        metrics.routes = ROUTES
            .iter()
            .map(|route| RouteSeries::new(&metrics, route))
            .collect();
        metrics.endpoints = Endpoint::ALL
            .iter()
            .map(|endpoint| {
                STATUS_CLASSES.map(|class| {
                    metrics
                        .endpoint_requests
                        .with_label_values(&[endpoint.as_str(), class])
                })
            })
            .collect();
        Some(metrics)
    }
}

/// `None` only if the metric definitions were invalid, which a test rules
/// out; the proxy then simply records nothing.
static METRICS: Lazy<Option<Metrics>> = Lazy::new(Metrics::new);

/// The tokens GigaChat reported for one answer.
#[derive(Debug, Clone, Copy)]
pub struct TokenCount {
    pub input: u64,
    pub output: u64,
}

/// What one finished request contributes.
pub struct Sample<'a> {
    pub route: &'static str,
    /// The kind of GigaChat call, for API calls the route classified.
    pub endpoint: Option<Endpoint>,
    pub status: u16,
    pub total_secs: f64,
    pub upstream_secs: Option<f64>,
    pub overhead_secs: Option<f64>,
    pub first_byte_secs: Option<f64>,
    pub error_code: Option<&'a str>,
    pub rate_limited: bool,
    pub cache: Option<CacheOutcome>,
    pub tokens: Option<TokenCount>,
    pub retries: u32,
    pub disconnected_stream: bool,
}

pub fn record(sample: &Sample<'_>) {
    let Some(m) = METRICS.as_ref() else { return };
    let class = match sample.status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    };
    match m.routes.iter().find(|series| series.route == sample.route) {
        Some(series) => {
            series.requests[class].inc();
            series.duration.observe(sample.total_secs);
            if let Some(upstream) = sample.upstream_secs {
                series.upstream.observe(upstream);
            }
            if let Some(overhead) = sample.overhead_secs {
                series.overhead.observe(overhead);
            }
            if let Some(first_byte) = sample.first_byte_secs {
                series.first_byte.observe(first_byte);
            }
        }
        None => {
            m.requests
                .with_label_values(&[sample.route, STATUS_CLASSES[class]])
                .inc();
            m.request_duration
                .with_label_values(&[sample.route])
                .observe(sample.total_secs);
        }
    }
    if let Some(series) = sample
        .endpoint
        .and_then(|endpoint| m.endpoints.get(endpoint as usize))
    {
        series[class].inc();
    }
    if let Some(code) = sample.error_code {
        m.errors.with_label_values(&[code]).inc();
    }
    if sample.rate_limited {
        m.ratelimited.with_label_values(&[sample.route]).inc();
    }
    if let Some(outcome) = sample.cache {
        m.cache.with_label_values(&[outcome.as_str()]).inc();
    }
    if let Some(tokens) = sample.tokens {
        m.tokens_input
            .with_label_values(&[sample.route])
            .inc_by(tokens.input);
        m.tokens_output
            .with_label_values(&[sample.route])
            .inc_by(tokens.output);
    }
    if sample.retries > 0 {
        m.retries
            .with_label_values(&[sample.route])
            .inc_by(u64::from(sample.retries));
    }
    if sample.disconnected_stream {
        m.stream_disconnects
            .with_label_values(&[sample.route])
            .inc();
    }
}

/// Tokens one finished request was charged against its caller's budget
/// (budget refusals count in `errors_total{code="token_budget_exceeded"}`
/// and `ratelimited_total`).
pub(crate) fn record_tokens_charged(route: &'static str, tokens: u64) {
    if let Some(m) = METRICS.as_ref() {
        m.tokens_charged.with_label_values(&[route]).inc_by(tokens);
    }
}

pub fn record_oauth(result: &'static str) {
    if let Some(m) = METRICS.as_ref() {
        m.oauth_refresh.with_label_values(&[result]).inc();
    }
}

/// The Prometheus text exposition of every metric.
pub fn render_prometheus() -> String {
    let Some(m) = METRICS.as_ref() else {
        return String::new();
    };
    let mut buffer = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut buffer)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// One CloudWatch Embedded Metric Format line for a finished request.
pub fn emf_line(sample: &Sample<'_>, timestamp_ms: u128) -> String {
    let mut metrics = vec![
        serde_json::json!({"Name": "Requests", "Unit": "Count"}),
        serde_json::json!({"Name": "Latency", "Unit": "Milliseconds"}),
    ];
    let mut line = serde_json::json!({
        "Route": sample.route,
        "StatusClass": format!("{}xx", sample.status / 100),
        "Requests": 1,
        "Latency": sample.total_secs * 1000.0,
    });
    let mut add = |name: &str, unit: &str, value: serde_json::Value| {
        metrics.push(serde_json::json!({"Name": name, "Unit": unit}));
        line[name] = value;
    };
    if let Some(overhead) = sample.overhead_secs {
        add(
            "OverheadLatency",
            "Milliseconds",
            serde_json::json!(overhead * 1000.0),
        );
    }
    if let Some(upstream) = sample.upstream_secs {
        add(
            "UpstreamLatency",
            "Milliseconds",
            serde_json::json!(upstream * 1000.0),
        );
    }
    if let Some(tokens) = sample.tokens {
        add("InputTokens", "Count", serde_json::json!(tokens.input));
        add("OutputTokens", "Count", serde_json::json!(tokens.output));
    }
    if sample.rate_limited {
        add("RateLimited", "Count", serde_json::json!(1));
    }
    line["_aws"] = serde_json::json!({
        "Timestamp": timestamp_ms as u64,
        "CloudWatchMetrics": [{
            "Namespace": "GigachatProxy",
            "Dimensions": [["Route"], ["Route", "StatusClass"]],
            "Metrics": metrics,
        }],
    });
    line.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sample() -> Sample<'static> {
        Sample {
            route: "api",
            endpoint: Some(Endpoint::Chat),
            status: 200,
            total_secs: 0.25,
            upstream_secs: Some(0.2),
            overhead_secs: Some(0.0004),
            first_byte_secs: Some(0.21),
            error_code: None,
            rate_limited: false,
            cache: Some(CacheOutcome::Miss),
            tokens: Some(TokenCount {
                input: 17,
                output: 3,
            }),
            retries: 1,
            disconnected_stream: false,
        }
    }

    #[test]
    fn the_registry_builds_and_renders_what_was_recorded() {
        assert!(METRICS.is_some(), "metric definitions are valid");
        record(&sample());
        record_oauth("ok");
        let text = render_prometheus();
        for name in [
            "gigachat_proxy_requests_total{route=\"api\",status=\"2xx\"}",
            "gigachat_proxy_overhead_seconds_bucket",
            "gigachat_proxy_tokens_input_total{route=\"api\"}",
            "gigachat_proxy_oauth_refresh_total{result=\"ok\"}",
            "gigachat_proxy_cache_total{outcome=\"miss\"}",
            "gigachat_proxy_upstream_retries_total",
            "gigachat_proxy_endpoint_requests_total{endpoint=\"chat\",status=\"2xx\"}",
            // Every kind's series exists from the start.
            "gigachat_proxy_endpoint_requests_total{endpoint=\"file_delete\",status=\"5xx\"}",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn each_kind_of_call_is_counted_in_its_own_series() {
        let m = METRICS.as_ref().unwrap();
        let server_errors = |endpoint: Endpoint| m.endpoints[endpoint as usize][4].get();
        let before = (
            server_errors(Endpoint::Batches),
            server_errors(Endpoint::Assistants),
        );
        record(&Sample {
            endpoint: Some(Endpoint::Batches),
            status: 503,
            ..sample()
        });
        assert_eq!(server_errors(Endpoint::Batches), before.0 + 1);
        assert_eq!(server_errors(Endpoint::Assistants), before.1);
        let needle = "gigachat_proxy_endpoint_requests_total{endpoint=\"batches\",status=\"5xx\"}";
        let text = render_prometheus();
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(needle))
            .and_then(|value| value.trim().parse::<u64>().ok());
        assert!(value.is_some_and(|v| v >= 1), "{needle} in\n{text}");
    }

    #[test]
    fn emf_lines_declare_every_metric_they_carry() {
        let line: serde_json::Value =
            serde_json::from_str(&emf_line(&sample(), 1_700_000_000_000)).unwrap();
        let declared: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &declared {
            assert!(line.get(*name).is_some(), "{name} has no value");
        }
        assert!(declared.contains(&"InputTokens"));
        assert_eq!(line["Route"], "api");
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000u64);
    }
}
