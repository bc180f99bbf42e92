//! `metallic`: a GPU inference engine on wgpu and WGSL — Metal on Apple Silicon, Vulkan and
//! DX12 elsewhere.
//!
//! The pieces, bottom up:
//!
//! - [`Context`]: adapter, device, queue and their [`Capabilities`];
//! - [`ResourceCache`]: compiled pipelines and layouts by typed key ([`Cacheable`]);
//! - [`MemoryPool`]: tensors sub-allocated from large buffers;
//! - [`Operation`] and [`CommandBuffer`]: ops validate, encode into one compute pass, submit;
//! - [`Tensor`] on a [`Runtime`] (context + cache + pool + an implicit command buffer), with
//!   arithmetic operators that return `Result`;
//! - [`Graph`]: a fixed list of operations over named tensors, run in one command buffer;
//! - [`kernels`]: the op library, one folder per op with its WGSL.
//!
//! ```
//! use metallic::{DType, Runtime, Tensor};
//!
//! let rt = Runtime::new()?;
//! let a = Tensor::random_uniform(&rt, [2, 3], DType::F32, -1.0, 1.0, 42)?;
//! let b = Tensor::full(&rt, [3], DType::F32, 0.5)?;
//! let c = (&(&a * &b)? + 1.0)?;
//! println!("{:?}", c.to_vec::<f32>()?);
//! # Ok::<(), metallic::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod cache;
mod command;
mod context;
mod error;
mod graph;
mod kernel;
pub mod kernels;
mod params;
pub mod pipelines;
mod pool;
mod profile;
pub mod quant;
mod runtime;
mod tensor;

pub use cache::{CacheStats, Cacheable, ResourceCache};
pub use command::{CommandBuffer, ComputeEncoder, Dispatch, Operation, TensorBinding};
pub use context::{Capabilities, Context, ContextBuilder, adapters};
pub use error::{Error, Result};
pub use graph::Graph;
pub use kernel::{ComputeKernel, Kernel, MAX_OVERRIDES, Overrides, PipelineKey, ShaderVariant, compose_source};
pub use params::{MAX_PARAMS_BYTES, ParamMode};
pub use pool::{Allocation, MemoryPool, PoolConfig, PoolStats};
pub use profile::KernelTime;
pub use runtime::{FLUSH_EVERY, PendingRead, Runtime};
pub use tensor::{DType, Element, IntoShape, MAX_DIMS, Shape, Strides, Tensor};

pub use half::f16;
pub use wgpu;
