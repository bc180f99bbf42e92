//! `MemoryPool`: tensors sub-allocated from large GPU buffers.
//!
//! The pool keeps a few big buffers ("chunks") and hands out aligned regions of them. Freed
//! regions return to a per-chunk free list, coalesced with their neighbours, and are reused
//! best-fit. Region offsets respect `min_storage_buffer_offset_alignment`, so a tensor binds
//! with its own offset and size.
//!
//! A region is released when its [`Allocation`] drops. Command buffers keep the allocations
//! they bind alive until they are submitted; after that the queue's ordering makes reuse safe
//! (a later kernel or host write to the same bytes runs after the earlier work).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::context::{Context, gpu_error, lock};
use crate::error::{Error, Result};

/// How a [`MemoryPool`] grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Size of each chunk the pool adds, in bytes (clamped to the device's `max_buffer_size`).
    /// Requests larger than a chunk get a chunk of their own.
    pub chunk_bytes: u64,
    /// Most bytes the pool may hold in GPU buffers. Past it, allocations fail with
    /// [`Error::PoolExhausted`].
    pub limit_bytes: u64,
    /// Whether the pool may add chunks after the first. With `false` the pool is a fixed arena.
    pub grow: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { chunk_bytes: 64 << 20, limit_bytes: u64::MAX, grow: true }
    }
}

/// Byte counts of a [`MemoryPool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held in GPU buffers.
    pub reserved_bytes: u64,
    /// Bytes handed out to live allocations (after alignment).
    pub used_bytes: u64,
    /// Highest `used_bytes` seen.
    pub peak_used_bytes: u64,
    /// GPU buffers held.
    pub chunks: usize,
    /// Live allocations.
    pub allocations: usize,
}

/// Sub-allocates GPU memory from large buffers. Cheap to clone (shared); `Send + Sync`.
///
/// ```
/// use metallic::{Context, MemoryPool, PoolConfig};
/// let ctx = Context::new()?;
/// let pool = MemoryPool::new(&ctx, PoolConfig::default());
/// let a = pool.alloc(1000)?;
/// let b = pool.alloc(1000)?;
/// assert_eq!(a.buffer(), b.buffer()); // both regions of one chunk
/// assert_ne!(a.offset(), b.offset());
/// assert_eq!(a.offset() % pool.alignment(), 0);
/// drop(a); // its region is reused by the next allocation that fits
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ctx: Context,
    config: PoolConfig,
    alignment: u64,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    chunks: Vec<Chunk>,
    next_id: u64,
    stats: PoolStats,
}

struct Chunk {
    id: u64,
    buffer: wgpu::Buffer,
    size: u64,
    /// Free ranges: offset → length, never adjacent (coalesced on free).
    free: BTreeMap<u64, u64>,
}

/// A region of a GPU buffer: from a [`MemoryPool`] (returned to it on drop) or wrapping a
/// buffer the caller owns.
pub struct Allocation {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
    lease: Option<Lease>,
}

struct Lease {
    pool: Arc<PoolInner>,
    chunk: u64,
}

impl Allocation {
    /// Wraps `size` bytes of `buffer` from `offset`; nothing is freed on drop.
    pub(crate) fn external(buffer: wgpu::Buffer, offset: u64, size: u64) -> Self {
        Allocation { buffer, offset, size, lease: None }
    }

    /// The GPU buffer holding the region.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Byte offset of the region in [`buffer`](Self::buffer).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size of the region in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("pooled", &self.lease.is_some())
            .finish()
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if let Some(lease) = &self.lease {
            lease.pool.free(lease.chunk, self.offset, self.size);
        }
    }
}

impl MemoryPool {
    /// An empty pool on `ctx`'s device; chunks are created on demand.
    pub fn new(ctx: &Context, config: PoolConfig) -> Self {
        let alignment = ctx.caps().storage_alignment();
        let max = ctx.caps().limits.max_buffer_size;
        let config = PoolConfig { chunk_bytes: config.chunk_bytes.clamp(alignment, max), ..config };
        MemoryPool { inner: Arc::new(PoolInner { ctx: ctx.clone(), config, alignment, state: Mutex::default() }) }
    }

    /// The configuration in force (chunk size clamped to the device).
    pub fn config(&self) -> PoolConfig {
        self.inner.config
    }

    /// Alignment of every region's offset and size, in bytes.
    pub fn alignment(&self) -> u64 {
        self.inner.alignment
    }

    /// A region of at least `bytes` bytes (rounded up to [`alignment`](Self::alignment);
    /// at least one alignment unit). Its contents are unspecified.
    pub fn alloc(&self, bytes: u64) -> Result<Allocation> {
        let inner = &self.inner;
        let size = bytes.max(1).checked_next_multiple_of(inner.alignment).ok_or(Error::BufferAllocation {
            requested: bytes,
            limit: inner.ctx.caps().limits.max_buffer_size,
            what: "max_buffer_size",
        })?;
        let mut state = lock(&inner.state);
        if let Some((chunk, offset)) = state.best_fit(size) {
            return state.take(inner, chunk, offset, size);
        }
        // No free range fits: add a chunk if the policy and limit allow.
        let chunk_size = size.max(inner.config.chunk_bytes);
        let reserved = state.stats.reserved_bytes;
        let may_grow = inner.config.grow || state.chunks.is_empty();
        if !may_grow || reserved.saturating_add(chunk_size) > inner.config.limit_bytes {
            // A chunk of exactly the request may still fit under the limit.
            if !may_grow || reserved.saturating_add(size) > inner.config.limit_bytes {
                return Err(Error::PoolExhausted {
                    requested: size,
                    used: state.stats.used_bytes,
                    reserved,
                    limit: inner.config.limit_bytes,
                });
            }
            let chunk = state.add_chunk(inner, size)?;
            return state.take(inner, chunk, 0, size);
        }
        let chunk = state.add_chunk(inner, chunk_size)?;
        state.take(inner, chunk, 0, size)
    }

    /// Releases chunks with no live allocations; returns the bytes released. A chunk's GPU
    /// memory is freed once nothing else holds its buffer: bind groups a
    /// [`ResourceCache`](crate::ResourceCache) keeps over it hold it until
    /// [`ResourceCache::clear`](crate::ResourceCache::clear).
    pub fn trim(&self) -> u64 {
        let mut state = lock(&self.inner.state);
        let before = state.stats.reserved_bytes;
        state.chunks.retain(|c| !(c.free.len() == 1 && c.free.get(&0) == Some(&c.size)));
        state.stats.reserved_bytes = state.chunks.iter().map(|c| c.size).sum();
        state.stats.chunks = state.chunks.len();
        before - state.stats.reserved_bytes
    }

    /// Current byte counts.
    pub fn stats(&self) -> PoolStats {
        lock(&self.inner.state).stats
    }

    /// The context whose device the pool allocates on.
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }
}

impl fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPool").field("config", &self.inner.config).field("stats", &self.stats()).finish()
    }
}

impl PoolState {
    /// The smallest free range that holds `size` bytes: (chunk index, offset).
    fn best_fit(&self, size: u64) -> Option<(usize, u64)> {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.free.iter().map(move |(&off, &len)| (i, off, len)))
            .filter(|&(_, _, len)| len >= size)
            .min_by_key(|&(_, _, len)| len)
            .map(|(i, off, _)| (i, off))
    }

    /// Cuts `size` bytes at `offset` out of chunk `index`'s free range starting there.
    fn take(&mut self, inner: &Arc<PoolInner>, index: usize, offset: u64, size: u64) -> Result<Allocation> {
        // `index` comes from `best_fit` or `add_chunk` under the same lock.
        let chunk =
            self.chunks.get_mut(index).ok_or_else(|| Error::invalid("MemoryPool", "chunk index out of range"))?;
        if let Some(len) = chunk.free.remove(&offset)
            && len > size
        {
            chunk.free.insert(offset + size, len - size);
        }
        let stats = &mut self.stats;
        stats.used_bytes += size;
        stats.peak_used_bytes = stats.peak_used_bytes.max(stats.used_bytes);
        stats.allocations += 1;
        let lease = Lease { pool: Arc::clone(inner), chunk: chunk.id };
        Ok(Allocation { buffer: chunk.buffer.clone(), offset, size, lease: Some(lease) })
    }

    fn add_chunk(&mut self, inner: &PoolInner, size: u64) -> Result<usize> {
        let ctx = &inner.ctx;
        let max = ctx.caps().limits.max_buffer_size;
        if size > max {
            return Err(Error::BufferAllocation { requested: size, limit: max, what: "max_buffer_size" });
        }
        let (buffer, err) = ctx.capture(|| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("metallic pool chunk"),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        if let Some(err) = err {
            return Err(gpu_error(err, &format!("allocating a {size}-byte pool chunk")));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.chunks.push(Chunk { id, buffer, size, free: BTreeMap::from([(0, size)]) });
        self.stats.reserved_bytes += size;
        self.stats.chunks = self.chunks.len();
        Ok(self.chunks.len() - 1)
    }
}

impl PoolInner {
    fn free(&self, chunk_id: u64, offset: u64, size: u64) {
        let mut state = lock(&self.state);
        state.stats.used_bytes = state.stats.used_bytes.saturating_sub(size);
        state.stats.allocations = state.stats.allocations.saturating_sub(1);
        let Some(chunk) = state.chunks.iter_mut().find(|c| c.id == chunk_id) else {
            return;
        };
        let (mut start, mut len) = (offset, size);
        // Merge with the free range just before, if it ends where this one starts.
        if let Some((&prev, &prev_len)) = chunk.free.range(..offset).next_back()
            && prev + prev_len == offset
        {
            chunk.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        // And with the one just after.
        if let Some(next_len) = chunk.free.remove(&(offset + size)) {
            len += next_len;
        }
        chunk.free.insert(start, len);
    }
}
