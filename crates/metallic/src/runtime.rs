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
    /// Read-back buffers of finished reads, reused by later ones that fit.
    staging: Mutex<Vec<wgpu::Buffer>>,
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
        Ok(Runtime { inner: Arc::new(RuntimeInner { ctx, cache, pool, pending, staging: Mutex::new(Vec::new()) }) })
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

    /// Times every later dispatch of the implicit command buffer on the GPU, per kernel (see
    /// [`CommandBuffer::enable_kernel_profiling`]); read with
    /// [`kernel_profile`](Self::kernel_profile).
    pub fn enable_kernel_profiling(&self) -> Result<()> {
        lock(&self.inner.pending).enable_kernel_profiling()
    }

    /// Stops [`enable_kernel_profiling`](Self::enable_kernel_profiling)'s timing (read the
    /// profile first: what it holds is dropped).
    pub fn disable_kernel_profiling(&self) -> Result<()> {
        lock(&self.inner.pending).disable_kernel_profiling()
    }

    /// GPU time per kernel of the implicit command buffer's commits since profiling began or
    /// since the last call, longest first (flushes first).
    pub fn kernel_profile(&self) -> Result<Vec<crate::KernelTime>> {
        let mut pending = lock(&self.inner.pending);
        pending.commit()?;
        Ok(pending.kernel_profile())
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
        let mut out = self.read_ranges(&[(buffer, offset, len)])?;
        out.pop().ok_or_else(|| Error::BufferMap { message: "no read-back".into() })
    }

    /// The data of several tensors, after all work recorded so far, in one round trip (one
    /// submission, one wait): what a decode loop reads each step (the sampled candidates'
    /// values and ids) costs one GPU-to-host latency, not one per tensor. Bytes in each
    /// tensor's dtype, in order.
    ///
    /// ```
    /// use metallic::{Runtime, Tensor};
    /// let rt = Runtime::new()?;
    /// let a = Tensor::from_slice(&rt, [2], &[1.0f32, 2.0])?;
    /// let b = Tensor::from_slice(&rt, [1], &[7u32])?;
    /// let bytes = rt.read_tensors(&[&a, &b])?;
    /// assert_eq!(bytes[0], [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
    /// assert_eq!(bytes[1], 7u32.to_le_bytes());
    /// # Ok::<(), metallic::Error>(())
    /// ```
    pub fn read_tensors(&self, tensors: &[&crate::Tensor]) -> Result<Vec<Vec<u8>>> {
        if let Some(t) = tensors.iter().find(|t| !t.runtime().same(self)) {
            return Err(Error::invalid(
                "read_tensors",
                format!("a tensor of shape {} belongs to another runtime", t.shape()),
            ));
        }
        let ranges: Vec<(&wgpu::Buffer, u64, u64)> =
            tensors.iter().map(|t| (t.buffer(), t.byte_offset(), t.size_in_bytes() as u64)).collect();
        self.read_ranges(&ranges)
    }

    /// Starts reading several tensors after all work recorded so far and returns at once;
    /// [`PendingRead::wait`] delivers the bytes. Work recorded after this call does not delay
    /// the read: a decode loop records the next step, then waits for this one's token, so the
    /// host records while the GPU computes.
    pub fn start_read(&self, tensors: &[&crate::Tensor]) -> Result<PendingRead> {
        if let Some(t) = tensors.iter().find(|t| !t.runtime().same(self)) {
            return Err(Error::invalid(
                "start_read",
                format!("a tensor of shape {} belongs to another runtime", t.shape()),
            ));
        }
        let ranges: Vec<(&wgpu::Buffer, u64, u64)> =
            tensors.iter().map(|t| (t.buffer(), t.byte_offset(), t.size_in_bytes() as u64)).collect();
        self.start_ranges(&ranges)
    }

    /// Reads `(buffer, offset, len)` ranges through one staging buffer.
    fn read_ranges(&self, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Result<Vec<Vec<u8>>> {
        self.start_ranges(ranges)?.wait()
    }

    /// Copies the ranges into a staging buffer (one kept from an earlier read when one fits:
    /// reads in a loop allocate nothing) and submits.
    fn start_ranges(&self, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Result<PendingRead> {
        // Word-aligned source spans, placed one after another in the staging buffer: each
        // copy is (source buffer, source start, staging offset, bytes).
        let mut spans = Vec::with_capacity(ranges.len());
        let mut copies = Vec::with_capacity(ranges.len());
        let mut total = 0u64;
        for &(buffer, offset, len) in ranges {
            let start = offset - offset % 4;
            let end = (offset + len).next_multiple_of(4);
            if end > buffer.size() {
                return Err(Error::invalid(
                    "read",
                    format!("bytes {offset}..{} outside a {}-byte buffer", offset + len, buffer.size()),
                ));
            }
            if len == 0 {
                spans.push((total, 0));
                continue;
            }
            spans.push((total + offset - start, len));
            copies.push((buffer, start, total, end - start));
            total += end - start;
        }
        let mut read = PendingRead { rt: self.clone(), staging: None, submission: None, spans, total };
        if total == 0 {
            return Ok(read);
        }
        let ctx = &self.inner.ctx;
        let reusable = {
            let mut kept = lock(&self.inner.staging);
            kept.iter().position(|b| b.size() >= total).map(|i| kept.swap_remove(i))
        };
        let staging = match reusable {
            Some(buffer) => buffer,
            None => ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("metallic read-back"),
                size: total.next_power_of_two().max(256),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        let mut pending = lock(&self.inner.pending);
        for &(buffer, start, at, size) in &copies {
            pending.copy_buffer(buffer, start, &staging, at, size);
        }
        read.staging = Some(staging);
        pending.commit()?;
        read.submission = pending.last_submission();
        Ok(read)
    }

    /// Writes `len` bytes, which `fill` writes straight into the queue's staging memory, into
    /// `buffer` at `offset` (both whole words), ordered after all work recorded so far: the
    /// upload of data built on the host (repacked weights) without a copy of its own first.
    pub(crate) fn write_bytes_with(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        len: u64,
        fill: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> Result<()>,
    ) -> Result<()> {
        if !offset.is_multiple_of(4) || !len.is_multiple_of(4) {
            return Err(Error::invalid("write", format!("{len} bytes at {offset}: both must be whole words")));
        }
        let Some(size) = wgpu::BufferSize::new(len) else {
            return fill(wgpu::WriteOnly::from_mut(&mut [][..]));
        };
        self.flush()?;
        let mut view = self.inner.ctx.queue().write_buffer_with(buffer, offset, size).ok_or_else(|| {
            Error::invalid("write", format!("bytes {offset}..{} outside a {}-byte buffer", offset + len, buffer.size()))
        })?;
        fill(view.slice(..))
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

/// Most read-back buffers a runtime keeps for reuse.
const KEPT_STAGING: usize = 4;

/// A read started by [`Runtime::start_read`]: the copies are submitted; [`wait`](Self::wait)
/// waits for them (and for nothing submitted later) and returns the bytes.
#[must_use = "a started read delivers nothing until waited for"]
pub struct PendingRead {
    rt: Runtime,
    staging: Option<wgpu::Buffer>,
    submission: Option<wgpu::SubmissionIndex>,
    /// Where each tensor's bytes start in the staging buffer, and how many.
    spans: Vec<(u64, u64)>,
    total: u64,
}

impl PendingRead {
    /// Waits for the copies and returns each tensor's bytes, in the order given.
    pub fn wait(mut self) -> Result<Vec<Vec<u8>>> {
        let Some(staging) = self.staging.take() else {
            return Ok(vec![Vec::new(); self.spans.len()]);
        };
        let result = self.map_and_copy(&staging);
        let mut kept = lock(&self.rt.inner.staging);
        if kept.len() < KEPT_STAGING {
            kept.push(staging);
        }
        result
    }

    fn map_and_copy(&self, staging: &wgpu::Buffer) -> Result<Vec<Vec<u8>>> {
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..self.total, move |result| {
            // The receiver waits below; a send can only fail if it is gone.
            let _ = tx.send(result);
        });
        self.rt.inner.ctx.wait_for(self.submission.clone())?;
        rx.recv()
            .map_err(|_| Error::BufferMap { message: "the map callback never ran".into() })?
            .map_err(|e| Error::BufferMap { message: e.to_string() })?;
        let out = {
            let view =
                staging.get_mapped_range(..self.total).map_err(|e| Error::BufferMap { message: e.to_string() })?;
            self.spans
                .iter()
                .map(|&(at, len)| view.get(at as usize..(at + len) as usize).map(<[u8]>::to_vec))
                .collect::<Option<Vec<_>>>()
        };
        staging.unmap();
        out.ok_or_else(|| Error::BufferMap { message: "mapped range shorter than requested".into() })
    }
}

impl fmt::Debug for PendingRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRead").field("bytes", &self.total).finish_non_exhaustive()
    }
}
