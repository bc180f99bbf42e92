//! What the generation endpoints share: reading a JSON body into typed fields with
//! OpenAI-shaped errors, the sampling fields and their checks, and the pieces of a response
//! (ids, timestamps, usage).
//!
//! A body is parsed once into a [`Value`]; each endpoint then reads the fields it knows from
//! it ([`fields`]), so the sampling fields are declared once for chat and completions. Unknown
//! fields are ignored, as OpenAI's newer optional fields (`user`, `store`, `metadata`) are
//! harmless; fields that would change the answer and are not implemented (`logit_bias`,
//! `tools`, `n` > 1) are refused with a 400 instead of being silently ignored.
//!
//! Defaults when a field is absent are llama.cpp's ([`SamplingOptions::default`]: temperature
//! 0.8, top-k 40, top-p 0.95, min-p 0.05), as llama-server's are; `seed` absent (or -1, as
//! llama-server takes it) draws a random seed; `max_tokens` absent generates until the model
//! stops or the request's context is full.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use metallic_models::sampling::SamplingOptions;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{MAX_TOP_LOGPROBS, Usage};
use crate::error::ApiError;

/// Most stop strings a request may give.
pub const MAX_STOPS: usize = 16;

/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 1024;

/// The body as JSON: an object, or a 400 saying what is wrong with it.
pub fn json_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")).with_code("invalid_json"))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    Ok(value)
}

/// The fields `T` declares, read from `body`; a field of the wrong type is a 400 naming it.
pub fn fields<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = plain_types(&e.inner().to_string());
        let error = ApiError::invalid(if path == "." { message } else { format!("{path}: {message}") });
        if path == "." { error } else { error.with_param(path) }
    })
}

/// serde's type names as a client would write them ("expected u32" → "expected a
/// non-negative integer").
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

/// The sampling and streaming fields of chat and completion requests.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    /// Any string is accepted (the loaded model answers), as llama-server does; only its
    /// type is checked.
    #[serde(rename = "model")]
    pub _model: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<u32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<serde_json::Number>,
    pub stop: Option<Value>,
    pub n: Option<u64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub cache_prompt: Option<bool>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A generation request checked and ready for the engine (less its prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sampling: SamplingOptions,
    /// `None`: until the model stops or the context is full.
    pub max_tokens: Option<usize>,
    pub stops: Vec<String>,
    /// Top log-probabilities per token (`Some(0)`: only the chosen token's).
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    pub cache_prompt: bool,
}

impl SamplingFields {
    /// The checked plan; `max_tokens` and `logprobs` come from the endpoint's own fields.
    pub fn plan(self, max_tokens: Option<(&str, u64)>, logprobs: Option<(&str, u64)>) -> Result<Plan, ApiError> {
        let d = SamplingOptions::default();
        let in_range = |name: &str, v: Option<f32>, lo: f32, hi: f32, default: f32| -> Result<f32, ApiError> {
            match v {
                Some(v) if !(lo..=hi).contains(&v) => {
                    Err(ApiError::invalid_param(name, format!("{name} must be between {lo} and {hi}, got {v}")))
                }
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        let temperature = in_range("temperature", self.temperature, 0.0, 2.0, d.temperature)?;
        let top_p = in_range("top_p", self.top_p, 0.0, 1.0, d.top_p)?;
        let min_p = in_range("min_p", self.min_p, 0.0, 1.0, d.min_p)?;
        let presence_penalty = in_range("presence_penalty", self.presence_penalty, -2.0, 2.0, 0.0)?;
        let frequency_penalty = in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0, 0.0)?;
        let repeat_penalty = match self.repeat_penalty {
            Some(v) if v <= 0.0 => {
                return Err(ApiError::invalid_param("repeat_penalty", format!("repeat_penalty must be > 0, got {v}")));
            }
            v => v.unwrap_or(d.repeat_penalty),
        };
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid_param("n", format!("only n = 1 is supported, got {n}")));
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::invalid_param("logit_bias", "logit_bias is not supported"));
        }
        let max_tokens = match max_tokens {
            Some((name, 0)) => return Err(ApiError::invalid_param(name, format!("{name} must be at least 1"))),
            Some((_, n)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        let logprobs = match logprobs {
            Some((name, n)) if n > MAX_TOP_LOGPROBS as u64 => {
                return Err(ApiError::invalid_param(
                    name,
                    format!("{name} must be at most {MAX_TOP_LOGPROBS}, got {n}"),
                ));
            }
            Some((_, n)) => Some(n as usize),
            None => None,
        };
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid_param(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        let sampling = SamplingOptions {
            temperature,
            top_k: self.top_k.map_or(d.top_k, |k| k as usize),
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n: self.repeat_last_n.map_or(d.repeat_last_n, |n| n as usize),
            presence_penalty,
            frequency_penalty,
            seed: seed(self.seed.as_ref())?,
        };
        // What the sampler itself refuses, in case its rules are stricter than the above.
        sampling.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(Plan {
            sampling,
            max_tokens,
            stops: stops(self.stop.as_ref())?,
            logprobs,
            stream,
            include_usage: self.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            cache_prompt: self.cache_prompt.unwrap_or(true),
        })
    }
}

/// The sampler's seed: the request's integer (-1 or absent: random).
fn seed(value: Option<&serde_json::Number>) -> Result<u64, ApiError> {
    let Some(n) = value else { return Ok(random_u64()) };
    match (n.as_u64(), n.as_i64()) {
        (Some(s), _) => Ok(s),
        (None, Some(-1)) => Ok(random_u64()),
        // Other negative seeds are as good as any: their two's complement bits.
        (None, Some(s)) => Ok(s as u64),
        (None, None) => Err(ApiError::invalid_param("seed", format!("seed must be an integer, got {n}"))),
    }
}

/// `stop`: a string or a list of strings.
fn stops(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::invalid_param(
                    format!("stop[{i}]"),
                    format!("stop[{i}]: expected a string, got {}", kind(other)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "stop",
                format!("stop: expected a string or an array of strings, got {}", kind(other)),
            ));
        }
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid_param("stop", format!("at most {MAX_STOPS} stop strings, got {}", list.len())));
    }
    if let Some(i) = list.iter().position(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid_param(
            "stop",
            format!("stop strings must be 1 to {MAX_STOP_BYTES} bytes long (stop string {i} is not)"),
        ));
    }
    Ok(list)
}

/// The JSON type of `value`, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Token counts in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageOut {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// Absent when a stop string ended the request before the engine reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

impl UsageOut {
    /// The engine's counts.
    pub fn from_engine(usage: Usage) -> Self {
        UsageOut {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: usage.cached_tokens }),
        }
    }

    /// Counts made in the HTTP layer, without the cached part.
    pub fn counted(prompt_tokens: usize, completion_tokens: usize) -> Self {
        UsageOut {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
        }
    }
}

/// A random 64-bit number from the standard library's per-process random keys (good enough
/// for seeds and ids; not for secrets).
pub fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// A response id: `prefix-` and 24 hex digits.
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:08x}", random_u64(), random_u64() as u32)
}

/// Seconds since the Unix epoch.
pub fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(body: Value) -> Result<Plan, ApiError> {
        let f: SamplingFields = fields(&body)?;
        let max = f.max_tokens;
        f.plan(max.map(|n| ("max_tokens", n)), None)
    }

    #[test]
    fn absent_fields_take_llama_cpp_defaults_and_a_random_seed() {
        let a = plan(json!({})).unwrap();
        let b = plan(json!({})).unwrap();
        let d = SamplingOptions::default();
        assert_eq!(SamplingOptions { seed: d.seed, ..a.sampling }, d);
        assert_ne!(a.sampling.seed, b.sampling.seed);
        assert_eq!((a.max_tokens, a.stream, a.cache_prompt, a.stops.len()), (None, false, true, 0));
        assert_ne!(plan(json!({"seed": -1})).unwrap().sampling.seed, plan(json!({"seed": -1})).unwrap().sampling.seed);
        assert_eq!(plan(json!({"seed": 7})).unwrap().sampling.seed, 7);
    }

    #[test]
    fn out_of_range_values_name_the_field_and_the_value() {
        for (body, param, says) in [
            (json!({"temperature": 2.5}), "temperature", "2.5"),
            (json!({"top_p": -0.1}), "top_p", "-0.1"),
            (json!({"presence_penalty": 3}), "presence_penalty", "3"),
            (json!({"repeat_penalty": 0}), "repeat_penalty", "0"),
            (json!({"max_tokens": 0}), "max_tokens", "at least 1"),
            (json!({"n": 2}), "n", "n = 1"),
            (json!({"seed": 1.5}), "seed", "1.5"),
            (json!({"stop": ["ok", 3]}), "stop[1]", "a number"),
            (json!({"stop": [""]}), "stop", "1 to"),
            (json!({"logit_bias": {"1": 5}}), "logit_bias", "not supported"),
            (json!({"stream_options": {"include_usage": true}}), "stream_options", "stream is true"),
        ] {
            let e = plan(body.clone()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }

    #[test]
    fn a_wrong_type_is_a_400_in_plain_words() {
        let e = plan(json!({"temperature": "hot"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.contains("expected a number"), "{}", e.message);
        let e = plan(json!({"max_tokens": -4})).unwrap_err();
        assert!(e.message.contains("expected a non-negative integer"), "{}", e.message);
    }

    #[test]
    fn only_a_json_object_is_a_body() {
        assert_eq!(json_object(b"{\"a\": 1").unwrap_err().code, Some("invalid_json"));
        assert!(json_object(b"[1]").unwrap_err().message.contains("object"));
        assert!(json_object(b"{}").is_ok());
    }

    #[test]
    fn stop_is_a_string_or_a_list() {
        assert_eq!(plan(json!({"stop": "\n"})).unwrap().stops, ["\n"]);
        assert_eq!(plan(json!({"stop": ["a", "b"]})).unwrap().stops, ["a", "b"]);
        assert!(plan(json!({"stop": null})).unwrap().stops.is_empty());
        assert!(plan(json!({"stop": vec!["x"; MAX_STOPS + 1]})).is_err());
    }
}
