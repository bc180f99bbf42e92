//! The HTTP server: routes, API key, body limit, request metrics, and its life — bound before
//! the models load (`/health` answers 503 `loading` meanwhile), ready once they are, and on
//! shutdown draining what is in flight for a grace period before cancelling it.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use metallic_models::Embedder;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Mutex, watch};

use crate::api::{Plan, unix_time};
use crate::engine::{Engine, GenerationRequest};
use crate::error::ApiError;
use crate::generation::{Cancelled, Run};
use crate::metrics::{self, Metrics};
use crate::{chat, completions, embeddings, webui};

/// How the server treats its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// When set, `/v1/*` requires `Authorization: Bearer KEY` (`/health` and `/metrics` stay
    /// open, for probes and scrapers).
    pub api_key: Option<String>,
    /// Largest request body in bytes; a larger one is answered 413.
    pub body_limit: usize,
    /// Embedding requests that may wait for the embedding model; one more is answered 429.
    pub max_embedding_queue: usize,
    /// How long a shutdown lets requests in flight finish before cancelling them.
    pub shutdown_grace: Duration,
    /// Whether `/` serves the chat page (its assets under `/webui/`); when not, those paths
    /// answer 404 like any unknown route.
    pub webui: bool,
}

/// 8 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 8 << 20;

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            max_embedding_queue: 64,
            shutdown_grace: Duration::from_secs(20),
            webui: true,
        }
    }
}

/// A generative model behind its engine.
#[derive(Debug)]
pub struct LanguageModel {
    /// The name `/v1/models` lists and responses carry.
    pub id: String,
    pub engine: Engine,
}

/// An embedding model.
#[derive(Debug)]
pub struct EmbeddingModel {
    /// The name `/v1/models` lists and responses carry.
    pub id: String,
    pub embedder: Embedder,
}

/// What the server serves; either model may be absent (its endpoints answer 404).
#[derive(Debug, Default)]
pub struct Models {
    pub language: Option<LanguageModel>,
    pub embedding: Option<EmbeddingModel>,
}

/// The loaded language model, as request handlers use it.
#[derive(Debug)]
pub(crate) struct Language {
    pub(crate) id: String,
    pub(crate) engine: Arc<Engine>,
    pub(crate) created: u64,
}

/// The loaded embedding model: one request at a time on the GPU, a bounded number waiting.
#[derive(Debug)]
pub(crate) struct Embedding {
    pub(crate) id: String,
    pub(crate) embedder: Arc<Mutex<Embedder>>,
    pub(crate) dim: usize,
    pub(crate) waiting: AtomicUsize,
    pub(crate) max_waiting: usize,
    pub(crate) created: u64,
}

#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) language: Option<Arc<Language>>,
    pub(crate) embedding: Option<Arc<Embedding>>,
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    options: ServerOptions,
    loaded: OnceLock<Loaded>,
    draining: AtomicBool,
    /// Set when the grace period ended and the engine's requests were cancelled.
    pub(crate) cancelled: Cancelled,
    pub(crate) metrics: Arc<Metrics>,
}

impl AppState {
    /// The models, or 503 while loading or shutting down.
    fn loaded(&self) -> Result<&Loaded, ApiError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        self.loaded.get().ok_or_else(|| ApiError::unavailable("the server is loading its models"))
    }

    /// The language model, 404 if none was loaded.
    pub(crate) fn language(&self) -> Result<Arc<Language>, ApiError> {
        self.loaded()?.language.clone().ok_or_else(|| {
            ApiError::not_found("no language model is loaded (start the server with --model FILE.gguf)")
                .with_code("model_not_found")
        })
    }

    /// The embedding model, 404 if none was loaded.
    pub(crate) fn embedding(&self) -> Result<Arc<Embedding>, ApiError> {
        self.loaded()?.embedding.clone().ok_or_else(|| {
            ApiError::not_found("no embedding model is loaded (start the server with --embedding-model DIR)")
                .with_code("model_not_found")
        })
    }

    /// The request body, or 413 (over the limit) or 400 (cut off) in OpenAI's shape.
    pub(crate) fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than the limit of {} bytes", self.options.body_limit),
                )
                .with_code("request_too_large")
            } else {
                ApiError::invalid(format!("the request body could not be read: {}", rejection.body_text()))
            }
        })
    }
}

impl Language {
    /// Submits `prompt` (`param`: the request field it came from) and returns its run.
    pub(crate) fn start(
        &self,
        state: &AppState,
        prompt: Vec<u32>,
        plan: &Plan,
        param: &str,
        started: Instant,
    ) -> Result<Run, ApiError> {
        let context = self.engine.config().ctx_size;
        let n = prompt.len();
        if n >= context {
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "the prompt has {n} tokens but the context holds {context} positions per request: \
                     at most {} prompt tokens, to leave room for one generated token",
                    context - 1
                ),
            )
            .with_code("context_length_exceeded"));
        }
        let events = self.engine.submit(GenerationRequest {
            prompt,
            max_tokens: plan.max_tokens.unwrap_or(usize::MAX),
            sampling: plan.sampling,
            logprobs: plan.logprobs,
            cache_prompt: plan.cache_prompt,
        })?;
        Ok(Run::new(events, n, plan.stops.clone(), state.cancelled.clone(), state.metrics.clone(), started))
    }
}

/// Runs `f` on the blocking pool (tokenizing a long prompt, rendering a chat template,
/// embedding) so that it does not hold up other requests.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("a worker thread failed: {e}")))?
}

/// A server bound to its address, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

/// Hands a running server its models.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    state: Arc<AppState>,
}

impl ServerHandle {
    /// Serves `models` from now on: `/health` turns 200 and the API answers. Only the first
    /// call counts: `false` (and the models dropped) when the server was ready already.
    pub fn ready(&self, models: Models) -> bool {
        if self.state.loaded.get().is_some() {
            return false;
        }
        let created = unix_time();
        let language = models.language.map(|m| Arc::new(Language { id: m.id, engine: Arc::new(m.engine), created }));
        let embedding = models.embedding.map(|m| {
            Arc::new(Embedding {
                id: m.id,
                dim: m.embedder.dim(),
                embedder: Arc::new(Mutex::new(m.embedder)),
                waiting: AtomicUsize::new(0),
                max_waiting: self.state.options.max_embedding_queue,
                created,
            })
        });
        let engine = language.as_ref().map(|l| l.engine.clone());
        let accepted = self.state.loaded.set(Loaded { language, embedding }).is_ok();
        if let (true, Some(engine)) = (accepted, engine) {
            self.state.metrics.watch_engine(&engine);
        }
        accepted
    }
}

/// Turns Nagle's algorithm off on an accepted connection: a streamed reply is many small
/// writes (one event per token), and with it on each waits for the client's acknowledgement of
/// the one before, which the client may delay by up to 40 ms. A connection whose option cannot
/// be set is served anyway.
fn send_at_once(tcp: &mut TcpStream) {
    let _ = tcp.set_nodelay(true);
}

impl Server {
    /// Binds `addr` (port 0: any free port); requests are answered 503 until
    /// [`ServerHandle::ready`].
    pub async fn bind(addr: impl ToSocketAddrs, options: ServerOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = Arc::new(AppState {
            options,
            loaded: OnceLock::new(),
            draining: AtomicBool::new(false),
            cancelled: Cancelled::default(),
            metrics: Arc::new(Metrics::new()),
        });
        Ok(Server { listener, state })
    }

    /// The address bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to make the server ready once its models are loaded.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { state: self.state.clone() }
    }

    /// Serves until `shutdown` completes; then stops accepting connections, answers 503 to
    /// new requests on open ones, lets requests in flight finish for the grace period,
    /// cancels the rest (their clients get 503, or an error event on a stream) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let state = self.state;
        let (draining, mut drain_started) = watch::channel(false);
        let signal = {
            let state = state.clone();
            async move {
                shutdown.await;
                state.draining.store(true, Ordering::SeqCst);
                draining.send_replace(true);
            }
        };
        let listener = self.listener.tap_io(send_at_once);
        let serving = axum::serve(listener, router(state.clone())).with_graceful_shutdown(signal).into_future();
        tokio::pin!(serving);
        tokio::select! {
            result = &mut serving => return result,
            _ = drain_started.wait_for(|&d| d) => {}
        }
        if let Ok(result) = tokio::time::timeout(state.options.shutdown_grace, &mut serving).await {
            return result;
        }
        state.cancelled.0.store(true, Ordering::SeqCst);
        if let Some(language) = state.loaded.get().and_then(|l| l.language.as_ref()) {
            language.engine.cancel_all();
        }
        // Cancelled requests answer at once; a connection that still does not close (a client
        // that stopped reading) is abandoned.
        match tokio::time::timeout(AFTER_CANCEL, &mut serving).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

/// How long connections get to close once their requests are cancelled.
const AFTER_CANCEL: Duration = Duration::from_secs(5);

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/embeddings", post(embeddings::handle))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(one_model))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text));
    // The page holds no data and is served without the key; the API calls it makes need it.
    let routes = if state.options.webui { api.merge(webui::routes()) } else { api };
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(DefaultBodyLimit::max(state.options.body_limit))
        .with_state(state)
}

/// 401 unless the request carries the API key (when one is set).
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.options.api_key else { return next.run(request).await };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(token) if same(token.as_bytes(), key.as_bytes()) => next.run(request).await,
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "incorrect API key").with_code("invalid_api_key").into_response()
        }
        None => ApiError::new(StatusCode::UNAUTHORIZED, "missing API key: send the header `Authorization: Bearer KEY`")
            .with_code("invalid_api_key")
            .into_response(),
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Counts every response by route and status, and as 499 a request whose client went away
/// before its answer (axum then drops the handler, and this future with it).
async fn count(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let endpoint = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let mut tally = Tally { metrics: &state.metrics, endpoint, status: CLIENT_CLOSED };
    let response = next.run(request).await;
    tally.status = response.status().as_u16();
    response
}

/// nginx's status for a request whose client closed the connection first.
const CLIENT_CLOSED: u16 = 499;

/// Counts one request when dropped, with the status it reached.
struct Tally<'a> {
    metrics: &'a Metrics,
    endpoint: String,
    status: u16,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.metrics.request(&self.endpoint, self.status);
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (status, word) = if state.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if state.loaded.get().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    } else {
        (StatusCode::OK, "ok")
    };
    (status, axum::Json(json!({ "status": word }))).into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::internal("the metrics could not be encoded").into_response(),
    }
}

/// `/v1/models`: what is loaded.
async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    match state.loaded() {
        Ok(loaded) => axum::Json(json!({ "object": "list", "data": model_objects(loaded) })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `/v1/models/{id}`: one of them, or 404.
async fn one_model(State(state): State<Arc<AppState>>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(rejection) => return ApiError::invalid(rejection.body_text()).with_param("model").into_response(),
    };
    let loaded = match state.loaded() {
        Ok(loaded) => loaded,
        Err(e) => return e.into_response(),
    };
    match model_objects(loaded)
        .into_iter()
        .find(|m| m.get("id").and_then(serde_json::Value::as_str) == Some(id.as_str()))
    {
        Some(model) => axum::Json(model).into_response(),
        None => ApiError::not_found(format!("no model `{id}` is loaded"))
            .with_param("model")
            .with_code("model_not_found")
            .into_response(),
    }
}

fn model_objects(loaded: &Loaded) -> Vec<serde_json::Value> {
    let mut models = Vec::new();
    if let Some(l) = &loaded.language {
        let config = l.engine.config();
        models.push(json!({
            "id": l.id, "object": "model", "created": l.created, "owned_by": "metallic",
            "meta": { "kind": "language", "ctx_size": config.ctx_size, "parallel": config.parallel,
                      "vocab": l.engine.llm().vocab().len() },
        }));
    }
    if let Some(e) = &loaded.embedding {
        models.push(json!({
            "id": e.id, "object": "model", "created": e.created, "owned_by": "metallic",
            "meta": { "kind": "embedding", "dim": e.dim },
        }));
    }
    models
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
    .with_code("method_not_allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_equal_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }

    /// Every accepted connection leaves with Nagle's algorithm off.
    #[tokio::test]
    async fn accepted_connections_send_at_once() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut listener = listener.tap_io(send_at_once);
        let _client = TcpStream::connect(addr).await?;
        let (tcp, _) = axum::serve::Listener::accept(&mut listener).await;
        assert!(tcp.nodelay()?);
        Ok(())
    }
}
