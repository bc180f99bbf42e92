//! Shared by the server tests: the models, a server started in-process on 127.0.0.1 port 0,
//! and a small HTTP client (hyper's connection API, so a test can hang up whenever it likes).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use metallic_models::decoder::PREFILL_CHUNK;
use metallic_models::{Embedder, Llm};
use metallic_serve::engine::{Engine, EngineConfig};
use metallic_serve::{EmbeddingModel, LanguageModel, Models, Server, ServerHandle, ServerOptions};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard, oneshot};
use tokio::task::JoinHandle;

/// The models directory: `METALLIC_MODELS`, else `~/.cache/metallic/models`.
fn models_root() -> PathBuf {
    std::env::var_os("METALLIC_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models"))
}

/// SmolLM2 135M Instruct Q4_1 (`scripts/fetch-smollm2.sh`), or `METALLIC_SMOLLM2`.
pub fn smollm2_path() -> PathBuf {
    let path = std::env::var_os("METALLIC_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| models_root().join("smollm2-135m-instruct-q4_1.gguf"));
    assert!(path.exists(), "{} not found: run ./scripts/fetch-smollm2.sh", path.display());
    path
}

/// all-MiniLM-L6-v2 (`scripts/fetch-model.sh`), or `METALLIC_MODEL_DIR`.
pub fn minilm_path() -> PathBuf {
    let path = std::env::var_os("METALLIC_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| models_root().join("all-MiniLM-L6-v2"));
    assert!(path.is_dir(), "{} not found: run ./scripts/fetch-model.sh", path.display());
    path
}

/// SmolLM2, loaded once per test binary and shared by the engines the tests start one after
/// another.
pub fn llm() -> Arc<Llm> {
    static LLM: OnceLock<Arc<Llm>> = OnceLock::new();
    LLM.get_or_init(|| Arc::new(Llm::load(smollm2_path()).unwrap())).clone()
}

/// The tests of one binary take turns: one GPU, and some of them fill the engine's queue.
pub async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}

/// A server in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// How a test server is made.
#[derive(Clone)]
pub struct Setup {
    pub options: ServerOptions,
    pub engine: Option<EngineConfig>,
}

impl Default for Setup {
    /// SmolLM2 with 2 sequences of 256 positions, 8 waiting at most; no API key.
    fn default() -> Self {
        Setup {
            options: ServerOptions::default(),
            engine: Some(EngineConfig {
                parallel: 2,
                ctx_size: 256,
                max_queue: 8,
                prefill_chunk: PREFILL_CHUNK,
                warm_up: false,
                pipeline_depth: 1,
            }),
        }
    }
}

impl TestServer {
    /// Bound, not ready: every model endpoint answers 503.
    pub async fn loading(options: ServerOptions) -> Self {
        let server = Server::bind("127.0.0.1:0", options).await.unwrap();
        let addr = server.local_addr().unwrap();
        let handle = server.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer { addr, handle, stop: Some(stop), task: Some(task) }
    }

    /// Ready with SmolLM2 as `setup` says.
    pub async fn start(setup: Setup) -> Self {
        Self::with_models(setup.options, Models { language: setup.engine.map(language), embedding: None }).await
    }

    /// Ready with `models`.
    pub async fn with_models(options: ServerOptions, models: Models) -> Self {
        let server = Self::loading(options).await;
        assert!(server.handle.ready(models));
        server
    }

    /// Begins the shutdown; [`stopped`](Self::stopped) waits for its end.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// How `Server::run` ended, and how long it took to.
    pub async fn stopped(&mut self) -> (std::io::Result<()>, Duration) {
        let start = Instant::now();
        let task = self.task.take().expect("stopped once");
        let result = tokio::time::timeout(Duration::from_secs(60), task).await.expect("the server stopped").unwrap();
        (result, start.elapsed())
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.addr, Method::GET, path, &[], None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        send(self.addr, Method::POST, path, &[], Some(body.to_string().into_bytes())).await
    }

    /// The value of metric `name` (a line `name value`, without labels) in `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text();
        metric_in(&text, name).unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Waits up to 60 s for `metric` to satisfy `ok`.
    pub async fn wait_for(&self, name: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.metric(name).await;
            if ok(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} is still {value} after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// An engine for SmolLM2.
pub fn language(config: EngineConfig) -> LanguageModel {
    LanguageModel { id: "smollm2".into(), engine: Engine::start(llm(), config).unwrap() }
}

/// all-MiniLM-L6-v2 under the name `minilm`.
pub fn embedding(embedder: Embedder) -> EmbeddingModel {
    EmbeddingModel { id: "minilm".into(), embedder }
}

/// The value of the unlabelled metric `name` in `text`.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// An answer read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap<HeaderValue>,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Checks this is an OpenAI error with `status`: `{"error": {message, type, param, code}}`
    /// and a JSON content type; returns the error object.
    pub fn error(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.headers.get("content-type").unwrap(), "application/json", "{}", self.text());
        let error = self.json()["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(error.get(key).is_some(), "no `{key}` in {error}");
        }
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        error
    }

    /// The `data:` payloads of a server-sent-events body.
    pub fn events(&self) -> Vec<String> {
        data_events(&self.text())
    }
}

/// The `data:` payloads in `text`.
pub fn data_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string))
        .collect()
}

/// The content pieces of a streamed chat answer (`choices[0].delta.content`), and the parsed
/// chunks; panics unless the stream ends with `[DONE]`.
pub fn chat_stream(events: &[String]) -> (String, Vec<Value>) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (text, chunks)
}

async fn connect(addr: SocketAddr) -> (hyper::client::conn::http1::SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn build(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap()
}

/// One request on a new connection, read whole.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let (mut sender, conn) = connect(addr).await;
    let response = sender.send_request(build(addr, method, path, headers, body)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    conn.abort();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// A request whose answer is read a piece at a time, and whose connection the test may drop.
pub struct Open {
    pub status: StatusCode,
    body: Incoming,
    buffer: String,
    conn: JoinHandle<()>,
}

impl Open {
    pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Self {
        let (mut sender, conn) = connect(addr).await;
        let request = build(addr, Method::POST, path, &[], Some(body.to_string().into_bytes()));
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        Open { status, body: response.into_body(), buffer: String::new(), conn }
    }

    /// The next `data:` payload of an event stream (`None` at its end).
    pub async fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                match data_events(&event).pop() {
                    Some(data) => return Some(data),
                    None => continue,
                }
            }
            let frame = self.body.frame().await?.unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The rest of the body.
    pub async fn rest(mut self) -> String {
        let rest = (&mut self.body).collect().await.unwrap().to_bytes();
        self.buffer.push_str(&String::from_utf8_lossy(&rest));
        std::mem::take(&mut self.buffer)
    }

    /// Closes the connection, as a client that goes away does.
    pub fn hang_up(self) {
        self.conn.abort();
    }
}

/// A request sent whose answer is not awaited, for a test that hangs up before it comes.
pub struct Unanswered {
    request: JoinHandle<()>,
    conn: JoinHandle<()>,
}

impl Unanswered {
    pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Self {
        let (mut sender, conn) = connect(addr).await;
        let request = build(addr, Method::POST, path, &[], Some(body.to_string().into_bytes()));
        let request = tokio::spawn(async move {
            let _ = sender.send_request(request).await;
        });
        Unanswered { request, conn }
    }

    /// Closes the connection.
    pub fn hang_up(self) {
        self.request.abort();
        self.conn.abort();
    }
}
