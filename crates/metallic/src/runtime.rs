//! `Runtime`: what the tensor API carries — a context, a resource cache, a memory pool and the
//! implicit command buffer that tensor operators record into.

use std::fmt;
use std::sync::{Arc, Mutex, mpsc};

use crate::cache::ResourceCache;
use crate::command::{CommandBuffer, Operation};
use crate::context::{Context, lock};
use crate::error::{Error, Result};
use crate::pool::{MemoryPool, PoolConfig};

/// Operations the implicit command buffer holds before it submits on its own.
pub const FLUSH_EVERY: usize = 128;

/// A [`Context`] with a [`ResourceCache`], a [`MemoryPool`] and an implicit command buffer.
///
/// Tensor operators (`(&a + &b)?`, `a.mul_scalar(2.0)?`, ...) record into the implicit command
/// buffer, which is submitted every [`FLUSH_EVERY`] operations and whenever the host reads or
/// writes tensor data. Cheap to clone (shared); `Send + Sync`.
///
/// ```
/// use metallic::{Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let x = Tensor::arange(&rt, 0.0, 4.0, 1.0, metallic::DType::F32)?;
/// let y = (&x * 2.0)?;
/// assert_eq!(y.to_vec::<f32>()?, [0.0, 2.0, 4.0, 6.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    ctx: Context,
    cache: ResourceCache,
    pool: MemoryPool,
    pending: Mutex<CommandBuffer>,
}

impl Runtime {
    /// A runtime on [`Context::new`]'s adapter with a default pool.
    pub fn new() -> Result<Self> {
        Self::with_context(&Context::new()?)
    }

    /// A runtime on `ctx` with a fresh cache and a default pool.
    pub fn with_context(ctx: &Context) -> Result<Self> {
        Self::from_parts(ResourceCache::new(ctx), MemoryPool::new(ctx, PoolConfig::default()))
    }

    /// A runtime over an existing cache and pool (which must share a device).
    pub fn from_parts(cache: ResourceCache, pool: MemoryPool) -> Result<Self> {
        let ctx = cache.context().clone();
        if !pool.context().same_device(&ctx) {
            return Err(Error::invalid("Runtime::from_parts", "cache and pool belong to different devices"));
        }
        let pending = Mutex::new(CommandBuffer::new(&ctx, &cache)?);
        Ok(Runtime { inner: Arc::new(RuntimeInner { ctx, cache, pool, pending }) })
    }

    /// The context.
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// The pipeline cache.
    pub fn cache(&self) -> &ResourceCache {
        &self.inner.cache
    }

    /// The memory pool tensors are allocated from.
    pub fn pool(&self) -> &MemoryPool {
        &self.inner.pool
    }

    /// Whether two handles are the same runtime.
    pub fn same(&self, other: &Runtime) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Records `op` into the implicit command buffer (submitting it every [`FLUSH_EVERY`] ops).
    pub fn record(&self, op: &dyn Operation) -> Result<()> {
        let mut pending = lock(&self.inner.pending);
        pending.record(op)?;
        if pending.len() >= FLUSH_EVERY {
            pending.commit()?;
        }
        Ok(())
    }

    /// Submits the implicit command buffer.
    pub fn flush(&self) -> Result<()> {
        lock(&self.inner.pending).commit()
    }

    /// Submits the implicit command buffer and waits for all GPU work to finish.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.inner.ctx.wait_for(None)
    }

    /// An explicit command buffer on this runtime's context and cache. Work recorded so far
    /// through the tensor API is submitted first, so the new buffer runs after it.
    pub fn command_buffer(&self) -> Result<CommandBuffer> {
        self.flush()?;
        CommandBuffer::new(&self.inner.ctx, &self.inner.cache)
    }

    /// Reads `len` bytes of `buffer` from `offset`, after all work recorded so far.
    pub(crate) fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let start = offset - offset % 4;
        let end = (offset + len).next_multiple_of(4);
        if end > buffer.size() {
            return Err(Error::invalid(
                "read",
                format!("bytes {offset}..{} outside a {}-byte buffer", offset + len, buffer.size()),
            ));
        }
        let ctx = &self.inner.ctx;
        let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("metallic read-back"),
            size: end - start,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let submission = {
            let mut pending = lock(&self.inner.pending);
            pending.copy_buffer(buffer, start, &staging, 0, end - start);
            pending.commit()?;
            pending.last_submission()
        };
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            // The receiver waits below; a send can only fail if it is gone.
            let _ = tx.send(result);
        });
        ctx.wait_for(submission)?;
        rx.recv()
            .map_err(|_| Error::BufferMap { message: "the map callback never ran".into() })?
            .map_err(|e| Error::BufferMap { message: e.to_string() })?;
        let bytes = {
            let view = staging.get_mapped_range(..).map_err(|e| Error::BufferMap { message: e.to_string() })?;
            let skip = (offset - start) as usize;
            view.get(skip..skip + len as usize).map(<[u8]>::to_vec)
        };
        staging.unmap();
        bytes.ok_or_else(|| Error::BufferMap { message: "mapped range shorter than requested".into() })
    }

    /// Writes `data` into `buffer` at `offset`, ordered after all work recorded so far.
    pub(crate) fn write_bytes(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        self.flush()?;
        let len = data.len() as u64;
        if offset.is_multiple_of(4) && len.is_multiple_of(4) {
            self.inner.ctx.queue().write_buffer(buffer, offset, data);
            return Ok(());
        }
        // Partial words at either end: merge with the bytes around them.
        let start = offset - offset % 4;
        let end = (offset + len).next_multiple_of(4);
        let mut words = self.read_bytes(buffer, start, end - start)?;
        let skip = (offset - start) as usize;
        if let Some(dst) = words.get_mut(skip..skip + data.len()) {
            dst.copy_from_slice(data);
        }
        self.inner.ctx.queue().write_buffer(buffer, start, &words);
        Ok(())
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("context", &self.inner.ctx)
            .field("cache", &self.inner.cache)
            .field("pool", &self.inner.pool)
            .finish()
    }
}
