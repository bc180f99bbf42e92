//! `POST /v1/embeddings`: one vector per input text from the embedding model, as floats or as
//! base64 of little-endian f32 (what the `openai` Python package asks for by default).
//!
//! The model runs one request at a time on a blocking thread (its GPU work is one batch
//! after another anyway); requests beyond `max_embedding_queue` waiting get 429. Texts longer
//! than the model's `max_seq_length` are truncated, as sentence-transformers does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{fields, json_object, kind};
use crate::error::ApiError;
use crate::server::{AppState, Embedding, blocking};

/// Most texts per request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
struct EmbeddingFields {
    input: Value,
    encoding_format: Option<String>,
    dimensions: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

/// The texts, the encoding and the dimensions asked for.
fn parse(body: &Value) -> Result<(Vec<String>, Encoding, Option<u64>), ApiError> {
    let f: EmbeddingFields = fields(body)?;
    let encoding = match f.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("encoding_format must be `float` or `base64`, got `{other}`"),
            ));
        }
    };
    let bad = |why: String| ApiError::invalid_param("input", format!("input: {why}"));
    let texts = match f.input {
        Value::String(s) => vec![s],
        Value::Array(items) if items.is_empty() => return Err(bad("no texts".into())),
        Value::Array(items) if items.len() > MAX_INPUTS => {
            return Err(bad(format!("at most {MAX_INPUTS} texts per request, got {}", items.len())));
        }
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                Value::Number(_) | Value::Array(_) => {
                    Err(bad("token ids are not supported for embeddings; send the text".into()))
                }
                other => Err(bad(format!("item {i}: expected a string, got {}", kind(&other)))),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(bad(format!("expected a string or an array of strings, got {}", kind(&other)))),
    };
    Ok((texts, encoding, f.dimensions))
}

/// A place among the requests waiting for (or using) the embedding model.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(model: &'a Embedding) -> Result<Self, ApiError> {
        let limit = model.max_waiting;
        model
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1))
            .map(|_| Waiting(&model.waiting))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("the server is busy: {limit} embedding requests are already waiting"),
                )
                .with_code("queue_full")
            })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn handle(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    respond(&state, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn respond(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let model = state.embedding()?;
    let (texts, encoding, dimensions) = parse(&json_object(&state.body(body)?)?)?;
    if let Some(d) = dimensions.filter(|&d| d != model.dim as u64) {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!("this model's embeddings have {} dimensions, not {d}", model.dim),
        ));
    }
    let _place = Waiting::enter(&model)?;
    // Held by the blocking task: a client that hangs up does not let the next request onto
    // the GPU before this one's batch is done.
    let embedder = model.embedder.clone().lock_owned().await;
    let (vectors, tokens) = blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let model_error = |e: metallic_models::Error| match e {
            metallic_models::Error::Tokenizer(m) | metallic_models::Error::InvalidInput(m) => ApiError::invalid(m),
            other => ApiError::internal(other.to_string()),
        };
        let tokens: usize = embedder.tokenize_batch(&refs).map_err(model_error)?.iter().map(Vec::len).sum();
        let vectors = embedder.embed(&refs).map_err(model_error)?;
        Ok((vectors, tokens))
    })
    .await?;
    if let Some(i) = vectors.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
        return Err(ApiError::internal(format!("the model computed a non-finite embedding for input {i}")));
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => json!(base64_f32(v)),
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model.id,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response())
}

/// `v` as little-endian f32 bytes in standard base64.
fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn input_is_a_string_or_a_list_of_strings() {
        let (texts, encoding, _) = parse(&json!({"input": "a", "model": "m"})).unwrap();
        assert_eq!((texts, encoding), (vec!["a".to_string()], Encoding::Float));
        let (texts, encoding, dims) =
            parse(&json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 384})).unwrap();
        assert_eq!((texts.len(), encoding, dims), (2, Encoding::Base64, Some(384)));
        for body in [
            json!({"input": []}),
            json!({"input": [1, 2]}),
            json!({"input": [[1, 2]]}),
            json!({"input": ["a", null]}),
            json!({"input": 5}),
            json!({"input": vec!["a"; MAX_INPUTS + 1]}),
            json!({"input": "a", "encoding_format": "int8"}),
        ] {
            let e = parse(&body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.param.is_some(), "{body}");
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0 = 0x3f800000, -2.0 = 0xc0000000.
        let bytes = base64::engine::general_purpose::STANDARD.decode(base64_f32(&[1.0, -2.0])).unwrap();
        assert_eq!(bytes, [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    }
}
