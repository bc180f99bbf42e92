//! `POST /v1/completions`: a raw prompt, as text (tokenized with BOS, special-token strings
//! parsed, as `metallic generate` does) or as token ids (used as given).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use metallic_models::Llm;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{Plan, SamplingFields, fields, json_object, kind, response_id, unix_time};
use crate::error::ApiError;
use crate::generation::{Chunk, TokenLogprobs, collect, stream, token_text};
use crate::server::{AppState, blocking};

/// The fields only completion requests have.
#[derive(Debug, Deserialize)]
struct CompletionFields {
    prompt: Value,
    /// The legacy API's number of top log-probabilities per token.
    logprobs: Option<u64>,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<u64>,
}

/// A prompt as the request gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

fn parse(body: &Value) -> Result<(Prompt, Plan), ApiError> {
    let completion: CompletionFields = fields(body)?;
    let sampling: SamplingFields = fields(body)?;
    if completion.echo == Some(true) {
        return Err(ApiError::invalid_param("echo", "echo is not supported"));
    }
    if completion.suffix.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_param("suffix", "suffix (fill in the middle) is not supported"));
    }
    if let Some(n) = completion.best_of.filter(|&n| n != 1) {
        return Err(ApiError::invalid_param("best_of", format!("only best_of = 1 is supported, got {n}")));
    }
    let max_tokens = sampling.max_tokens.map(|n| ("max_tokens", n));
    let plan = sampling.plan(max_tokens, completion.logprobs.map(|n| ("logprobs", n)))?;
    Ok((prompt(completion.prompt)?, plan))
}

/// `prompt`: a string, token ids, or a list holding exactly one of either.
fn prompt(value: Value) -> Result<Prompt, ApiError> {
    let bad = |why: String| ApiError::invalid_param("prompt", format!("prompt: {why}"));
    let items = match value {
        Value::String(s) => return Ok(Prompt::Text(s)),
        Value::Array(items) => items,
        other => return Err(bad(format!("expected a string or an array of token ids, got {}", kind(&other)))),
    };
    let token_ids = |ids: &[Value]| {
        ids.iter()
            .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect::<Option<Vec<u32>>>()
            .map(Prompt::Tokens)
            .ok_or_else(|| bad("token ids must be integers from 0 to 4294967295".into()))
    };
    match items.as_slice() {
        [] => Err(bad("the prompt has no tokens".into())),
        [first, ..] if first.is_number() => token_ids(&items),
        [Value::String(s)] => Ok(Prompt::Text(s.clone())),
        [Value::Array(ids)] if ids.first().is_some_and(Value::is_number) => token_ids(ids),
        [other] => Err(bad(format!("expected a string or token ids, got {}", kind(other)))),
        many => Err(bad(format!("one prompt per request, got {}", many.len()))),
    }
}

pub(crate) async fn handle(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    respond(&state, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn respond(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let started = Instant::now();
    let language = state.language()?;
    let (prompt, plan) = parse(&json_object(&state.body(body)?)?)?;
    let llm = language.engine.llm().clone();
    let tokens = match prompt {
        Prompt::Tokens(ids) => ids,
        Prompt::Text(text) => blocking(move || Ok(llm.tokenize(&text, true))).await?,
    };
    let run = language.start(state, tokens, &plan, "prompt", started)?;
    let llm = language.engine.llm().clone();
    let (id, created, model) = (response_id("cmpl"), unix_time(), language.id.clone());
    let want_logprobs = plan.logprobs.is_some();
    let choice = move |text: &str, logprobs: Value, finish: Value| json!({ "text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish });
    if !plan.stream {
        let out = collect(run).await?;
        let logprobs = if want_logprobs { logprobs_json(&llm, &out.logprobs) } else { Value::Null };
        return Ok(axum::Json(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice(&out.text, logprobs, json!(out.finish.as_str()))],
            "usage": out.usage,
        }))
        .into_response());
    }
    let include_usage = plan.include_usage;
    let render = move |c: Chunk<'_>| {
        let (choices, usage) = match c {
            Chunk::Start => return None,
            Chunk::Text { text, logprobs } => {
                let lp = if want_logprobs { logprobs_json(&llm, logprobs) } else { Value::Null };
                (json!([choice(text, lp, Value::Null)]), Value::Null)
            }
            Chunk::Finish(finish) => (json!([choice("", Value::Null, json!(finish.as_str()))]), Value::Null),
            Chunk::Usage(usage) => (json!([]), json!(usage)),
        };
        let mut chunk =
            json!({ "id": id, "object": "text_completion", "created": created, "model": model, "choices": choices });
        if include_usage && let Some(object) = chunk.as_object_mut() {
            object.insert("usage".into(), usage);
        }
        Some(chunk)
    };
    Ok(stream(run, include_usage, render).into_response())
}

/// The legacy `logprobs` object: parallel lists of tokens, their log-probabilities, the most
/// likely tokens at each position, and where each token's text starts (bytes).
fn logprobs_json(llm: &Llm, logprobs: &[TokenLogprobs]) -> Value {
    let text = |id: u32| token_text(llm, id).0;
    let tokens: Vec<String> = logprobs.iter().map(|lp| text(lp.step.chosen.id)).collect();
    let token_logprobs: Vec<f32> = logprobs.iter().map(|lp| lp.step.chosen.logprob).collect();
    let top: Vec<Map<String, Value>> =
        logprobs.iter().map(|lp| lp.step.top.iter().map(|t| (text(t.id), json!(t.logprob))).collect()).collect();
    let offsets: Vec<usize> = logprobs.iter().map(|lp| lp.offset).collect();
    json!({ "tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_is_text_or_token_ids_alone_or_in_a_list_of_one() {
        let p = |v: Value| prompt(v);
        assert_eq!(p(json!("Hi")).unwrap(), Prompt::Text("Hi".into()));
        assert_eq!(p(json!(["Hi"])).unwrap(), Prompt::Text("Hi".into()));
        assert_eq!(p(json!([1, 2, 3])).unwrap(), Prompt::Tokens(vec![1, 2, 3]));
        assert_eq!(p(json!([[1, 2]])).unwrap(), Prompt::Tokens(vec![1, 2]));
        for bad in
            [json!([]), json!(["a", "b"]), json!([1, -2]), json!([1, 2.5]), json!([1, "a"]), json!(7), json!([5e10])]
        {
            let e = p(bad.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("prompt"), "{bad}");
        }
    }

    #[test]
    fn what_is_not_supported_is_a_400_naming_the_field() {
        for (body, param) in [
            (json!({"prompt": "x", "echo": true}), "echo"),
            (json!({"prompt": "x", "suffix": "y"}), "suffix"),
            (json!({"prompt": "x", "best_of": 2}), "best_of"),
            (json!({"prompt": "x", "logprobs": 50}), "logprobs"),
            (json!({"prompt": "x", "n": 2}), "n"),
        ] {
            assert_eq!(parse(&body).unwrap_err().param.as_deref(), Some(param), "{body}");
        }
        let (_, plan) = parse(&json!({"prompt": "x", "logprobs": 2, "max_tokens": 3, "echo": false})).unwrap();
        assert_eq!((plan.logprobs, plan.max_tokens), (Some(2), Some(3)));
        assert!(parse(&json!({"max_tokens": 3})).unwrap_err().message.contains("missing field `prompt`"));
    }
}
