//! `metallic serve`: an OpenAI-compatible HTTP server over one language model (and optionally
//! one embedding model), with continuous batching on the GPU.
//!
//! - [`engine`]: the GPU scheduler (KV slots, prefix cache, chunked prefill, decode steps).
//! - [`Server`]: the HTTP side — `/v1/chat/completions`, `/v1/completions`,
//!   `/v1/embeddings`, `/v1/models`, `/health`, `/metrics` — bound before the models load,
//!   made ready with [`ServerHandle::ready`], shut down gracefully by [`Server::run`].
//! - `webui`: the chat page at `/` (unless [`ServerOptions::webui`] is off), a static page that
//!   uses the API above with the same key as any client.
//!
//! `docs/SERVING.md` describes the API, its limits and how to deploy it.
#![deny(unsafe_code)]

mod api;
mod chat;
mod completions;
mod embeddings;
pub mod engine;
mod error;
mod generation;
mod metrics;
mod server;
mod webui;

pub use error::ApiError;
pub use server::{DEFAULT_BODY_LIMIT, EmbeddingModel, LanguageModel, Models, Server, ServerHandle, ServerOptions};
