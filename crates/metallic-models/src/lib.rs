//! Models on the `metallic` engine, loaded from the files users already have.
//!
//! - [`Embedder`]: sentence embeddings from a sentence-transformers directory (a BERT encoder
//!   such as all-MiniLM-L6-v2: `model.safetensors`, `config.json`, `tokenizer.json`,
//!   `modules.json`), matching what sentence-transformers computes.
//! - [`bert`]: the BERT encoder itself, one struct per block of the Hugging Face config.
//! - [`weights`]: memory-mapped safetensors files, uploaded tensor by tensor with their shapes
//!   checked.
//! - [`gguf`]: memory-mapped GGUF files (llama.cpp's format): metadata, tensor infos and raw
//!   block data, validated as untrusted input.
//!
//! ```no_run
//! use metallic_models::Embedder;
//!
//! let embedder = Embedder::load("models/all-MiniLM-L6-v2")?;
//! let vectors = embedder.embed(&["The cat sat on the mat.", "A feline rested on a rug."])?;
//! let cosine: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
//! println!("similarity {cosine:.3}");
//! # Ok::<(), metallic_models::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod bert;
mod bpe;
pub mod chat;
pub mod decoder;
mod embedder;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
mod llm;
mod mapped;
pub mod sampling;
pub mod stop;
pub mod vocab;
pub mod weights;

pub use embedder::{EmbedTimings, Embedder, EmbedderOptions, Pooling, l2_normalize};
pub use error::{Error, Result};
pub use gguf::{GgufArray, GgufFile, GgufString, GgufType, GgufValue};
pub use llm::{Generation, Llm};

/// The README's Rust examples (engine and models), run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;
