//! `POST /v1/chat/completions`.
//!
//! The conversation goes through the model's chat template ([`Llm::chat_prompt`], which ends
//! with the opening of the assistant's turn) and is tokenized with BOS as `metallic generate
//! --chat` does, so a greedy request answers what `metallic generate --chat --temperature 0`
//! prints.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use metallic_models::Llm;
use metallic_models::chat::ChatMessage;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Plan, SamplingFields, fields, json_object, kind, response_id, unix_time};
use crate::error::ApiError;
use crate::generation::{Chunk, TokenLogprobs, collect, stream, token_text};
use crate::server::{AppState, blocking};

/// The fields only chat requests have.
#[derive(Debug, Deserialize)]
struct ChatFields {
    messages: Vec<MessageIn>,
    max_completion_tokens: Option<u64>,
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
    response_format: Option<ResponseFormat>,
    tools: Option<Vec<Value>>,
    functions: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    role: String,
    #[serde(default)]
    content: Value,
    tool_calls: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

/// The conversation and the checked plan of a chat request body.
fn parse(body: &Value) -> Result<(Vec<ChatMessage>, Plan), ApiError> {
    let chat: ChatFields = fields(body)?;
    let sampling: SamplingFields = fields(body)?;
    if chat.tools.as_ref().is_some_and(|t| !t.is_empty()) || chat.functions.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(ApiError::invalid_param("tools", "tools and function calling are not supported"));
    }
    if let Some(format) = chat.response_format.filter(|f| f.kind != "text") {
        return Err(ApiError::invalid_param(
            "response_format",
            format!("response_format `{}` is not supported; only `text` is", format.kind),
        ));
    }
    let logprobs = match (chat.logprobs, chat.top_logprobs) {
        (Some(true), top) => Some(("top_logprobs", top.unwrap_or(0))),
        (_, Some(_)) => {
            return Err(ApiError::invalid_param("top_logprobs", "top_logprobs needs logprobs: true"));
        }
        _ => None,
    };
    let max_tokens = match (chat.max_completion_tokens, sampling.max_tokens) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let plan = sampling.plan(max_tokens, logprobs)?;
    if chat.messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "messages must hold at least one message"));
    }
    let messages = chat.messages.into_iter().enumerate().map(|(i, m)| message(i, m)).collect::<Result<_, _>>()?;
    Ok((messages, plan))
}

/// Message `i` as the template takes it: role `system` (or `developer`, its newer name),
/// `user` or `assistant`; content a string or a list of text parts.
fn message(i: usize, m: MessageIn) -> Result<ChatMessage, ApiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].role"),
                format!("messages[{i}].role: `{other}` is not supported (system, developer, user or assistant)"),
            ));
        }
    };
    if m.tool_calls.is_some_and(|calls| !calls.is_empty()) {
        return Err(ApiError::invalid_param(format!("messages[{i}].tool_calls"), "tool calls are not supported"));
    }
    let param = format!("messages[{i}].content");
    let content = match m.content {
        Value::String(s) => s,
        // An assistant turn may have no content (OpenAI allows it with tool calls).
        Value::Null if role == "assistant" => String::new(),
        Value::Array(parts) => {
            let texts = parts
                .iter()
                .enumerate()
                .map(|(j, part)| match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(text))) => Ok(text.as_str()),
                    (Some("text"), _) => Err(ApiError::invalid_param(
                        format!("{param}[{j}].text"),
                        format!("{param}[{j}].text: expected a string"),
                    )),
                    (other, _) => Err(ApiError::invalid_param(
                        format!("{param}[{j}].type"),
                        format!("{param}[{j}]: only text parts are supported, got {}", other.unwrap_or("no type")),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            texts.join("\n")
        }
        other => {
            return Err(ApiError::invalid_param(
                param.clone(),
                format!("{param}: expected a string or an array of text parts, got {}", kind(&other)),
            ));
        }
    };
    Ok(ChatMessage::new(role, &content))
}

pub(crate) async fn handle(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    respond(&state, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn respond(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let started = Instant::now();
    let language = state.language()?;
    let (messages, plan) = parse(&json_object(&state.body(body)?)?)?;
    let llm = language.engine.llm().clone();
    let prompt = blocking(move || {
        let (text, _) = llm.chat_prompt(&messages).map_err(|e| match e {
            metallic_models::Error::InvalidInput(m) => ApiError::invalid_param("messages", m),
            other => ApiError::internal(other.to_string()),
        })?;
        Ok(llm.tokenize(&text, true))
    })
    .await?;
    let run = language.start(state, prompt, &plan, "messages", started)?;
    let llm = language.engine.llm().clone();
    let (id, created, model) = (response_id("chatcmpl"), unix_time(), language.id.clone());
    let want_logprobs = plan.logprobs.is_some();
    if !plan.stream {
        let out = collect(run).await?;
        let logprobs = want_logprobs.then(|| logprobs_json(&llm, &out.logprobs));
        return Ok(axum::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": out.text },
                "logprobs": logprobs,
                "finish_reason": out.finish.as_str(),
            }],
            "usage": out.usage,
        }))
        .into_response());
    }
    let include_usage = plan.include_usage;
    let chunk = move |choices: Value| {
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices,
        });
        if include_usage && let Some(object) = chunk.as_object_mut() {
            object.insert("usage".into(), Value::Null);
        }
        chunk
    };
    let render = move |c: Chunk<'_>| {
        let (delta, logprobs, finish) = match c {
            Chunk::Start => (json!({ "role": "assistant", "content": "" }), Value::Null, Value::Null),
            Chunk::Text { text, logprobs } => {
                let lp = if want_logprobs { logprobs_json(&llm, logprobs) } else { Value::Null };
                (json!({ "content": text }), lp, Value::Null)
            }
            Chunk::Finish(finish) => (json!({}), Value::Null, json!(finish.as_str())),
            Chunk::Usage(usage) => {
                let mut last = chunk(json!([]));
                if let Some(object) = last.as_object_mut() {
                    object.insert("usage".into(), json!(usage));
                }
                return Some(last);
            }
        };
        Some(chunk(json!([{ "index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish }])))
    };
    Ok(stream(run, include_usage, render).into_response())
}

/// `choices[0].logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
fn logprobs_json(llm: &Llm, logprobs: &[TokenLogprobs]) -> Value {
    let entry = |id: u32, logprob: f32| {
        let (token, bytes) = token_text(llm, id);
        json!({ "token": token, "logprob": logprob, "bytes": bytes })
    };
    let content: Vec<Value> = logprobs
        .iter()
        .map(|lp| {
            let mut chosen = entry(lp.step.chosen.id, lp.step.chosen.logprob);
            let top: Vec<Value> = lp.step.top.iter().map(|t| entry(t.id, t.logprob)).collect();
            if let Some(object) = chosen.as_object_mut() {
                object.insert("top_logprobs".into(), Value::Array(top));
            }
            chosen
        })
        .collect();
    json!({ "content": content })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_string_or_text_parts_and_developer_is_system() {
        let (messages, plan) = parse(&json!({
            "model": "anything",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null},
            ],
            "max_completion_tokens": 5,
            "max_tokens": 9,
        }))
        .unwrap();
        assert_eq!(
            messages,
            [
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi\nthere"),
                ChatMessage::new("assistant", "")
            ]
        );
        assert_eq!(plan.max_tokens, Some(5), "max_completion_tokens wins over the older max_tokens");
        assert_eq!(plan.logprobs, None);
    }

    #[test]
    fn what_is_not_supported_is_a_400_naming_the_field() {
        let user = json!([{"role": "user", "content": "Hi"}]);
        for (body, param) in [
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content"),
            (json!({"messages": [{"role": "user", "content": null}]}), "messages[0].content"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}), "messages[0].content[0].text"),
            (json!({"messages": user, "n": 3}), "n"),
            (json!({"messages": user, "response_format": {"type": "json_object"}}), "response_format"),
            (json!({"messages": user, "tools": [{"type": "function"}]}), "tools"),
            (json!({"messages": user, "top_logprobs": 2}), "top_logprobs"),
            (json!({"messages": user, "logprobs": true, "top_logprobs": 21}), "top_logprobs"),
            (json!({"messages": "Hi"}), "messages"),
        ] {
            let e = parse(&body).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        }
        let e = parse(&json!({"model": "x"})).unwrap_err();
        assert!(e.message.contains("missing field `messages`"), "{}", e.message);
    }

    #[test]
    fn logprobs_true_asks_for_the_top_ones_given() {
        let user = json!([{"role": "user", "content": "Hi"}]);
        assert_eq!(parse(&json!({"messages": user, "logprobs": true})).unwrap().1.logprobs, Some(0));
        assert_eq!(parse(&json!({"messages": user, "logprobs": true, "top_logprobs": 3})).unwrap().1.logprobs, Some(3));
        assert_eq!(parse(&json!({"messages": user, "logprobs": false})).unwrap().1.logprobs, None);
        assert!(parse(&json!({"messages": user, "response_format": {"type": "text"}})).is_ok());
    }
}
