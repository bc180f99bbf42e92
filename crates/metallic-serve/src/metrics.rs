//! `/metrics` in the Prometheus text format (`prometheus-client`).
//!
//! Two sources: the HTTP layer counts requests by endpoint and status and times tokens as
//! their events arrive (time to first token from the request's arrival, then the gap between
//! tokens); the engine's own counters and gauges ([`Engine::stats`]) are read at each scrape
//! by a collector, so they are never copied or out of date.
//!
//! KV memory is reported in positions: the engine gives each of `--parallel` sequences one
//! slot of `--ctx-size` positions, and a position in use is one token whose keys and values
//! a running sequence holds.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::engine::{Engine, EngineStats};

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of `metallic_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route (`/v1/chat/completions`), or `unmatched`.
    endpoint: String,
    status: u16,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    first_token: Histogram,
    between_tokens: Histogram,
    engine: Arc<OnceLock<Weak<Engine>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered; the engine's appear once [`watch_engine`](Self::watch_engine)
    /// is called.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "metallic_http_requests",
            "HTTP requests by endpoint and status (499: the client went away before the answer)",
            requests.clone(),
        );
        // 10 ms to 82 s; 1 ms to 8.2 s.
        let first_token = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register_with_unit(
            "metallic_time_to_first_token",
            "From a generation request's arrival to its first token",
            Unit::Seconds,
            first_token.clone(),
        );
        let between_tokens = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "metallic_inter_token_latency",
            "Between two tokens of one generation, as the HTTP layer receives them",
            Unit::Seconds,
            between_tokens.clone(),
        );
        let engine = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(EngineCollector { engine: engine.clone() }));
        Metrics { registry, requests, first_token, between_tokens, engine }
    }

    /// Reports `engine`'s statistics from now on (held weakly: the metrics do not keep the
    /// engine alive).
    pub fn watch_engine(&self, engine: &Arc<Engine>) {
        // A second engine is not a case the server has: the first stays.
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    /// Counts a request answered with `status`.
    pub fn request(&self, endpoint: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { endpoint: endpoint.to_string(), status }).inc();
    }

    pub fn time_to_first_token(&self, d: Duration) {
        self.first_token.observe(d.as_secs_f64());
    }

    pub fn inter_token_latency(&self, d: Duration) {
        self.between_tokens.observe(d.as_secs_f64());
    }

    /// The text Prometheus scrapes.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The engine's statistics, read at each scrape.
#[derive(Debug)]
struct EngineCollector {
    engine: Arc<OnceLock<Weak<Engine>>>,
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else { return Ok(()) };
        let s: EngineStats = engine.stats();
        let gauges = [
            ("metallic_sequences_active", "Sequences holding a KV slot (prefilling or decoding).", s.active),
            ("metallic_queue_depth", "Generation requests waiting for a KV slot.", s.queued),
            ("metallic_kv_positions_used", "KV cache positions held by running sequences.", s.kv_used),
            (
                "metallic_kv_positions_free",
                "KV cache positions not held by a running sequence.",
                s.kv_total - s.kv_used,
            ),
            ("metallic_kv_positions", "KV cache positions in all slots (--parallel x --ctx-size).", s.kv_total),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            (
                "metallic_prompt_tokens",
                "Prompt tokens run through the model (cached ones not included).",
                s.prompt_tokens,
            ),
            ("metallic_generated_tokens", "Tokens generated.", s.generated_tokens),
            ("metallic_prefix_cache_hits", "Requests that reused a cached prompt prefix.", s.prefix_hits),
            ("metallic_prefix_cache_tokens", "Prompt tokens served from the prefix cache.", s.cached_tokens),
            ("metallic_decode_steps", "Decode steps run.", s.steps),
            (
                "metallic_prompts_together",
                "Prompt chunks run in one pass with other prompts' (bursts of short prompts).",
                s.prompts_together,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let seconds = [
            (
                "metallic_scheduler_busy_seconds",
                "Time the scheduler spent on anything but the waits below: recording passes and steps, sampling (with the logits it reads back), detokenizing.",
                s.scheduler_busy,
            ),
            (
                "metallic_scheduler_waiting_seconds",
                "Time the scheduler waited for the token read-backs of pipelined greedy steps and of greedy prompts' first tokens.",
                s.scheduler_waiting,
            ),
        ];
        for (name, help, value) in seconds {
            let counter = ConstCounter::new(value.as_secs_f64());
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_latencies_are_in_the_text() {
        let m = Metrics::new();
        m.request("/v1/chat/completions", 200);
        m.request("/v1/chat/completions", 200);
        m.request("unmatched", 404);
        m.time_to_first_token(Duration::from_millis(30));
        m.inter_token_latency(Duration::from_millis(2));
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"metallic_http_requests_total{endpoint="/v1/chat/completions",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"metallic_http_requests_total{endpoint="unmatched",status="404"} 1"#), "{text}");
        assert!(text.contains("metallic_time_to_first_token_seconds_count 1"), "{text}");
        assert!(text.contains(r#"metallic_time_to_first_token_seconds_bucket{le="0.04"} 1"#), "{text}");
        assert!(text.contains(r#"metallic_inter_token_latency_seconds_bucket{le="0.001"} 0"#), "{text}");
        assert!(text.contains(r#"metallic_inter_token_latency_seconds_bucket{le="0.002"} 1"#), "{text}");
        // No engine yet: none of its metrics.
        assert!(!text.contains("metallic_kv_positions"), "{text}");
    }
}
