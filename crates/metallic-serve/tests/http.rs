//! The server over HTTP, started in-process on 127.0.0.1 port 0 with SmolLM2 135M (and
//! all-MiniLM-L6-v2 for embeddings): statuses and error shapes, the API key, limits, stop
//! strings, cancellation when a client hangs up, the queue limit, metrics, shutdown, and greedy
//! answers equal to `metallic generate`'s library path.
//!
//! Token counts stay small: CI runs this on lavapipe with two cores.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Open, Reply, Setup, TestServer, Unanswered, chat_stream, llm, one_at_a_time, send};
use hyper::{Method, StatusCode};
use metallic_models::Embedder;
use metallic_models::chat::ChatMessage;
use metallic_models::decoder::PREFILL_CHUNK;
use metallic_models::sampling::SamplingOptions;
use metallic_serve::engine::EngineConfig;
use metallic_serve::{Models, ServerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUESTION: &str = "What is the capital of France?";

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

#[tokio::test]
async fn health_says_loading_until_the_models_are_ready() {
    let server = TestServer::loading(ServerOptions::default()).await;
    let health = server.get("/health").await;
    assert_eq!((health.status, health.json()), (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "loading"})));
    server.post("/v1/chat/completions", &json!({"messages": user("Hi")})).await.error(StatusCode::SERVICE_UNAVAILABLE);
    server.get("/v1/models").await.error(StatusCode::SERVICE_UNAVAILABLE);

    assert!(server.handle.ready(Models::default()));
    let health = server.get("/health").await;
    assert_eq!((health.status, health.json()), (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(server.get("/v1/models").await.json(), json!({"object": "list", "data": []}));
    // Endpoints whose model is not loaded: 404, saying which flag loads it.
    let e = server.post("/v1/chat/completions", &json!({"messages": user("Hi")})).await.error(StatusCode::NOT_FOUND);
    assert!(e["message"].as_str().unwrap().contains("--model"), "{e}");
    let e = server.post("/v1/embeddings", &json!({"input": "Hi"})).await.error(StatusCode::NOT_FOUND);
    assert!(e["message"].as_str().unwrap().contains("--embedding-model"), "{e}");
    assert!(!server.handle.ready(Models::default()), "only the first models count");
}

/// A request with the test key.
async fn keyed(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string().into_bytes());
    send(server.addr, method, path, &[("authorization", "Bearer sesame")], body).await
}

/// The raw answer to `request` written on a new connection: status line, headers and body.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading all of it: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&answer).contains("}}") {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn every_error_is_openai_shaped_with_its_status() {
    let _turn = one_at_a_time().await;
    let options = ServerOptions { api_key: Some("sesame".into()), body_limit: 64 << 10, ..ServerOptions::default() };
    let server = TestServer::start(Setup { options, ..Setup::default() }).await;
    let chat = "/v1/chat/completions";

    // The API key: missing or wrong is 401; probes and scrapers need none.
    let e = server.post(chat, &json!({"messages": user("Hi")})).await.error(StatusCode::UNAUTHORIZED);
    assert_eq!(e["code"], "invalid_api_key");
    let wrong = send(server.addr, Method::GET, "/v1/models", &[("authorization", "Bearer sesame!")], None).await;
    assert_eq!(wrong.error(StatusCode::UNAUTHORIZED)["type"], "authentication_error");
    assert_eq!(wrong.headers.get("www-authenticate").unwrap(), "Bearer");
    let lower = send(server.addr, Method::GET, "/v1/models", &[("authorization", "bearer sesame")], None).await;
    assert_eq!(lower.status, StatusCode::OK, "{}", lower.text());
    assert_eq!(lower.json()["data"][0]["id"], "smollm2");
    assert_eq!(server.get("/health").await.status, StatusCode::OK);
    assert_eq!(server.get("/metrics").await.status, StatusCode::OK);
    assert_eq!(keyed(&server, Method::GET, "/v1/models/smollm2", None).await.json()["object"], "model");
    keyed(&server, Method::GET, "/v1/models/gpt-4", None).await.error(StatusCode::NOT_FOUND);
    // A path that is not UTF-8 once decoded: still an OpenAI-shaped error.
    keyed(&server, Method::GET, "/v1/models/%FF", None).await.error(StatusCode::BAD_REQUEST);

    // Routes and methods.
    keyed(&server, Method::GET, "/v1/nothing", None).await.error(StatusCode::NOT_FOUND);
    server.get("/nothing").await.error(StatusCode::NOT_FOUND);
    keyed(&server, Method::GET, chat, None).await.error(StatusCode::METHOD_NOT_ALLOWED);
    keyed(&server, Method::DELETE, "/health", None).await.error(StatusCode::METHOD_NOT_ALLOWED);

    // Bodies over the limit (64 KiB here), with a length or in chunks.
    let mut declared = format!(
        "POST {chat} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sesame\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        (64 << 10) + 1
    )
    .into_bytes();
    declared.resize(declared.len() + (64 << 10) + 1, b' ');
    let answer = raw(server.addr, &declared).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"request_too_large""#) && answer.contains("65536 bytes"), "{answer}");
    let mut chunked = format!(
        "POST {chat} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sesame\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..17 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[b' '; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    let answer = raw(server.addr, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Malformed bodies and bad values: 400 naming the field.
    let bad_json = send(
        server.addr,
        Method::POST,
        chat,
        &[("authorization", "Bearer sesame")],
        Some(b"{\"messages\": [".to_vec()),
    );
    assert_eq!(bad_json.await.error(StatusCode::BAD_REQUEST)["code"], "invalid_json");
    let not_utf8 =
        send(server.addr, Method::POST, chat, &[("authorization", "Bearer sesame")], Some(vec![b'"', 0xff, b'"']));
    not_utf8.await.error(StatusCode::BAD_REQUEST);
    let hi = user("Hi");
    for (path, body, param) in [
        (chat, json!([1, 2]), Value::Null),
        (chat, json!({"model": "x"}), Value::Null),
        (chat, json!({"messages": hi, "temperature": "hot"}), json!("temperature")),
        (chat, json!({"messages": hi, "temperature": 5}), json!("temperature")),
        (chat, json!({"messages": hi, "max_tokens": 0}), json!("max_tokens")),
        (chat, json!({"messages": hi, "n": 2}), json!("n")),
        (chat, json!({"messages": hi, "response_format": {"type": "json_object"}}), json!("response_format")),
        (chat, json!({"messages": hi, "logprobs": true, "top_logprobs": 50}), json!("top_logprobs")),
        (chat, json!({"messages": [{"role": "robot", "content": "Hi"}]}), json!("messages[0].role")),
        (chat, json!({"messages": hi, "stop": [1]}), json!("stop[0]")),
        ("/v1/completions", json!({"prompt": []}), json!("prompt")),
        ("/v1/completions", json!({"prompt": "x", "seed": "one"}), json!("seed")),
        ("/v1/embeddings", json!({"input": "x"}), Value::Null),
    ] {
        let reply = keyed(&server, Method::POST, path, Some(body.clone())).await;
        let status = if path == "/v1/embeddings" { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
        let e = reply.error(status);
        assert_eq!(e["param"], param, "{body}: {e}");
    }

    // The prompt longer than the context (256 positions): both numbers, OpenAI's code.
    let long = json!({"prompt": vec![100; 300], "max_tokens": 1});
    let e = keyed(&server, Method::POST, "/v1/completions", Some(long)).await.error(StatusCode::BAD_REQUEST);
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("300") && message.contains("256"), "{message}");
    assert_eq!((e["code"].as_str(), e["param"].as_str()), (Some("context_length_exceeded"), Some("prompt")));
    let e = keyed(&server, Method::POST, chat, Some(json!({"messages": user(&"word ".repeat(400))}))).await;
    assert_eq!(e.error(StatusCode::BAD_REQUEST)["code"], "context_length_exceeded");
    // A token id outside the vocabulary, from the engine's own check.
    let e = keyed(&server, Method::POST, "/v1/completions", Some(json!({"prompt": [1, 49152]}))).await;
    assert!(e.error(StatusCode::BAD_REQUEST)["message"].as_str().unwrap().contains("49152"));

    // Nothing reached the GPU, and every answer was counted.
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"metallic_http_requests_total{endpoint="/v1/chat/completions",status="400"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"metallic_http_requests_total{endpoint="unmatched",status="404"} 2"#), "{metrics}");
    assert_eq!(server.metric("metallic_generated_tokens_total").await, 0.0);
}

#[tokio::test]
async fn a_greedy_chat_answers_what_metallic_generate_chat_prints() {
    let _turn = one_at_a_time().await;
    // `metallic generate --chat --temperature 0 --max-tokens 12`'s library path, first (the
    // engine below must not run at the same time).
    let llm = llm();
    let (prompt, _) = llm.chat_prompt(&[ChatMessage::new("user", QUESTION)]).unwrap();
    let tokens = llm.tokenize(&prompt, true);
    let reference = llm.generate(&tokens, 12, SamplingOptions::greedy(), |_| {}).unwrap();
    assert!(!reference.text.is_empty());
    let finish = if reference.tokens.len() < 12 { "stop" } else { "length" };

    let server = TestServer::start(Setup::default()).await;
    let chat = "/v1/chat/completions";
    let request = json!({"model": "whatever", "messages": user(QUESTION), "temperature": 0, "max_tokens": 12,
                         "cache_prompt": false, "logprobs": true, "top_logprobs": 3});
    let whole = server.post(chat, &request).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.text());
    let whole = whole.json();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "smollm2");
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"], json!({"role": "assistant", "content": reference.text}));
    assert_eq!(choice["finish_reason"], finish);
    assert_eq!(whole["usage"]["prompt_tokens"], tokens.len());
    assert_eq!(whole["usage"]["completion_tokens"], reference.tokens.len());
    assert_eq!(whole["usage"]["total_tokens"], tokens.len() + reference.tokens.len());
    // Log-probabilities: one entry per token, three most likely each, the greedy choice first.
    let entries = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(entries.len(), reference.tokens.len());
    let pieces: String = entries.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(pieces, reference.text);
    for e in entries {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], e["token"]);
        assert!(top.windows(2).all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()), "{top:?}");
        assert!(e["logprob"].as_f64().unwrap() <= 0.0);
    }

    // Streamed: the same text, the role first, the finish, the usage, then [DONE].
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let reply = server.post(chat, &streamed).await;
    assert_eq!(reply.headers.get("content-type").unwrap(), "text/event-stream");
    let (text, chunks) = chat_stream(&reply.events());
    assert_eq!(text, reference.text);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    let last = chunks.last().unwrap();
    assert_eq!(
        (last["choices"].as_array().map(Vec::len), &last["usage"]["completion_tokens"]),
        (Some(0), &json!(reference.tokens.len()))
    );
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], finish);

    // Text parts are the same message; the completions endpoint on the rendered prompt is the
    // same generation.
    let parts = json!([{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]);
    let reply =
        server.post(chat, &json!({"messages": parts, "temperature": 0, "max_tokens": 12, "cache_prompt": false})).await;
    assert_eq!(reply.json()["choices"][0]["message"]["content"], reference.text);
    let reply = server
        .post("/v1/completions", &json!({"prompt": prompt, "temperature": 0, "max_tokens": 12, "cache_prompt": false}))
        .await;
    assert_eq!(reply.json()["choices"][0]["text"], reference.text);

    // The default cache_prompt reuses the prefix the earlier requests left in a slot.
    let reply = server.post(chat, &json!({"messages": user(QUESTION), "temperature": 0, "max_tokens": 1})).await;
    let cached = reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached > 0 && (cached as usize) < tokens.len(), "{cached}");
    assert!(server.metric("metallic_prefix_cache_hits_total").await >= 1.0);
}

#[tokio::test]
async fn stop_strings_end_the_text_before_them_even_across_tokens() {
    let _turn = one_at_a_time().await;
    let server = TestServer::start(Setup::default()).await;
    let base = json!({"prompt": "The capital of France is", "temperature": 0, "max_tokens": 8, "cache_prompt": false});
    let mut with_tokens = base.clone();
    with_tokens["logprobs"] = json!(0);
    let full = server.post("/v1/completions", &with_tokens).await.json();
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let tokens: Vec<&str> =
        full["choices"][0]["logprobs"]["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens.concat(), text);
    // A stop string made of the last character of one token and the first of the next.
    let at = (1..tokens.len()).find(|&i| !tokens[i - 1].is_empty() && !tokens[i].is_empty()).unwrap();
    let stop: String = tokens[at - 1].chars().last().into_iter().chain(tokens[at].chars().next()).collect();
    let expected = &text[..text.find(&stop).unwrap()];

    let mut stopped = base.clone();
    stopped["stop"] = json!(["never in this text \u{1f600}", stop]);
    let whole = server.post("/v1/completions", &stopped).await.json();
    assert_eq!(whole["choices"][0]["text"], expected, "stop {stop:?} in {text:?}");
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() <= at as u64 + 1, "{whole}");
    stopped["stream"] = json!(true);
    let events = server.post("/v1/completions", &stopped).await.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let streamed: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, expected);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // A stop string that never appears changes nothing.
    let mut never = base.clone();
    never["stop"] = "never in this text \u{1f600}".into();
    let whole = server.post("/v1/completions", &never).await.json();
    assert_eq!(
        (whole["choices"][0]["text"].as_str(), whole["choices"][0]["finish_reason"].as_str()),
        (Some(text.as_str()), Some("length"))
    );
    // The stopped sequences were cancelled: nothing holds the KV cache.
    server.wait_for("metallic_sequences_active", |n| n == 0.0).await;
    assert_eq!(server.metric("metallic_kv_positions_used").await, 0.0);
}

#[tokio::test]
async fn a_client_that_hangs_up_frees_its_sequence() {
    let _turn = one_at_a_time().await;
    let server = TestServer::start(Setup::default()).await;
    let long = json!({"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "stream": true});
    let mut open = Open::post(server.addr, "/v1/completions", &long).await;
    assert_eq!(open.status, StatusCode::OK);
    // Wait for generated text, then go away.
    loop {
        let event: Value = serde_json::from_str(&open.next_event().await.unwrap()).unwrap();
        if event["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()) {
            break;
        }
    }
    server.wait_for("metallic_sequences_active", |n| n == 1.0).await;
    open.hang_up();
    server.wait_for("metallic_sequences_active", |n| n == 0.0).await;
    assert_eq!(server.metric("metallic_kv_positions_used").await, 0.0);
    let generated = server.metric("metallic_generated_tokens_total").await;
    assert!(generated < 100.0, "{generated} tokens: the generation went on");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.metric("metallic_generated_tokens_total").await, generated);

    // The same for a request that is not streamed: its receiver lives in the handler.
    let mut whole = long.clone();
    whole["stream"] = json!(false);
    let pending = Unanswered::post(server.addr, "/v1/completions", &whole).await;
    server.wait_for("metallic_generated_tokens_total", |n| n > generated).await;
    pending.hang_up();
    server.wait_for("metallic_sequences_active", |n| n == 0.0).await;
    assert_eq!(server.metric("metallic_kv_positions_used").await, 0.0);
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"metallic_http_requests_total{endpoint="/v1/completions",status="499"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_429_and_the_server_stays_healthy() {
    let _turn = one_at_a_time().await;
    let engine = EngineConfig {
        parallel: 1,
        ctx_size: 256,
        max_queue: 1,
        prefill_chunk: PREFILL_CHUNK,
        warm_up: false,
        pipeline_depth: 1,
    };
    let server = TestServer::start(Setup { engine: Some(engine), ..Setup::default() }).await;
    // Greedy: the first request surely runs on while the queue fills (no early end of text).
    let long = json!({"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "stream": true});
    let running = Open::post(server.addr, "/v1/completions", &long).await;
    server.wait_for("metallic_sequences_active", |n| n == 1.0).await;
    // Short, so that the test does not depend on how soon a hang-up of an unanswered request
    // is noticed (a_client_that_hangs_up_frees_its_sequence checks that).
    let short = json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0});
    let waiting = Unanswered::post(server.addr, "/v1/completions", &short).await;
    server.wait_for("metallic_queue_depth", |n| n == 1.0).await;

    let refused = server.post("/v1/completions", &json!({"prompt": "Hello", "max_tokens": 1})).await;
    let e = refused.error(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!((e["code"].as_str(), e["type"].as_str()), (Some("queue_full"), Some("rate_limit_error")));
    assert_eq!(refused.headers.get("retry-after").unwrap(), "1");
    assert_eq!(server.get("/health").await.status, StatusCode::OK);

    running.hang_up();
    waiting.hang_up();
    server.wait_for("metallic_sequences_active", |n| n == 0.0).await;
    server.wait_for("metallic_queue_depth", |n| n == 0.0).await;
    let reply = server.post("/v1/completions", &json!({"prompt": "Hello", "max_tokens": 1})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_latencies() {
    let _turn = one_at_a_time().await;
    let server = TestServer::start(Setup::default()).await;
    let reply = server.post("/v1/completions", &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0})).await;
    let usage = reply.json()["usage"].clone();
    let (prompt, generated) = (usage["prompt_tokens"].as_f64().unwrap(), usage["completion_tokens"].as_f64().unwrap());
    assert!(generated >= 1.0, "{usage}");
    // The engine publishes its gauges after each step, which may come just after the answer.
    server.wait_for("metallic_kv_positions_used", |n| n == 0.0).await;
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.headers.get("content-type").unwrap(), "text/plain; version=0.0.4; charset=utf-8");
    let text = metrics.text();
    assert!(text.contains(r#"metallic_http_requests_total{endpoint="/v1/completions",status="200"} 1"#), "{text}");
    let value = |name: &str| common::metric_in(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    assert_eq!(value("metallic_time_to_first_token_seconds_count"), 1.0);
    assert_eq!(value("metallic_inter_token_latency_seconds_count"), generated - 1.0);
    assert_eq!(value("metallic_generated_tokens_total"), generated);
    assert_eq!(value("metallic_prompt_tokens_total"), prompt);
    assert_eq!(value("metallic_kv_positions"), 512.0);
    assert_eq!(value("metallic_kv_positions_free"), 512.0);
    assert_eq!(value("metallic_prefix_cache_hits_total"), 0.0);
    assert!(value("metallic_decode_steps_total") >= generated - 1.0);
    // One prompt, alone.
    assert_eq!(value("metallic_prompts_together_total"), 0.0);
    // The scheduler recorded a prompt and steps, and read tokens back.
    assert!(value("metallic_scheduler_busy_seconds_total") > 0.0);
    assert!(value("metallic_scheduler_waiting_seconds_total") > 0.0);
}

#[tokio::test]
async fn embeddings_as_floats_or_base64_are_the_embedders() {
    let _turn = one_at_a_time().await;
    let embedder = Embedder::load(common::minilm_path()).unwrap();
    let texts = ["The cat sat on the mat.", "Ein Hund bellt im Garten.", ""];
    let reference = embedder.embed(&texts).unwrap();
    let tokens: usize = embedder.tokenize_batch(&texts).unwrap().iter().map(Vec::len).sum();
    let models = Models { language: None, embedding: Some(common::embedding(embedder)) };
    let server = TestServer::with_models(ServerOptions::default(), models).await;

    let floats = server.post("/v1/embeddings", &json!({"input": texts, "model": "any"})).await.json();
    assert_eq!((floats["object"].as_str(), floats["model"].as_str()), (Some("list"), Some("minilm")));
    assert_eq!(floats["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, (item, want)) in data.iter().zip(&reference).enumerate() {
        assert_eq!(item["index"], i);
        let got: Vec<f32> = item["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&got, want, "text {i}");
    }
    let b64 = server.post("/v1/embeddings", &json!({"input": texts, "encoding_format": "base64"})).await.json();
    for (item, want) in b64["data"].as_array().unwrap().iter().zip(&reference) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(item["embedding"].as_str().unwrap()).unwrap();
        let got: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(&got, want);
    }
    let one = server.post("/v1/embeddings", &json!({"input": texts[0], "dimensions": 384})).await.json();
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 384);

    let e =
        server.post("/v1/embeddings", &json!({"input": "x", "dimensions": 100})).await.error(StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "dimensions");
    let e = server.post("/v1/embeddings", &json!({"input": [[101, 102]]})).await.error(StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("token ids"), "{e}");
    server.post("/v1/chat/completions", &json!({"messages": user("Hi")})).await.error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_then_cancels_the_rest() {
    let _turn = one_at_a_time().await;
    // A grace period long enough: the answer in flight completes, new connections are refused.
    let options = ServerOptions { shutdown_grace: Duration::from_secs(60), ..ServerOptions::default() };
    let mut server = TestServer::start(Setup { options, ..Setup::default() }).await;
    let short = json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0, "stream": true});
    let open = Open::post(server.addr, "/v1/completions", &short).await;
    server.shut_down();
    let refused = async {
        while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused).await.expect("the listener closes");
    let rest = open.rest().await;
    assert!(rest.contains(r#""finish_reason":"#) && rest.ends_with("data: [DONE]\n\n"), "{rest}");
    let (result, took) = server.stopped().await;
    assert!(result.is_ok() && took < Duration::from_secs(30), "{result:?} after {took:?}");

    // A short grace period: the long answer (to the end of the context) is cancelled with a
    // 503-shaped error event.
    let options = ServerOptions { shutdown_grace: Duration::from_millis(100), ..ServerOptions::default() };
    let mut server = TestServer::start(Setup { options, ..Setup::default() }).await;
    let long = json!({"prompt": "Once upon a time", "temperature": 0, "stream": true});
    let open = Open::post(server.addr, "/v1/completions", &long).await;
    server.shut_down();
    let rest = open.rest().await;
    let last: Value = serde_json::from_str(common::data_events(&rest).last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "unavailable_error", "{rest}");
    assert!(!rest.contains("[DONE]"), "{rest}");
    let (result, took) = server.stopped().await;
    assert!(result.is_ok() && took < Duration::from_secs(10), "{result:?} after {took:?}");
}
