//! Key-based cache of compiled GPU objects.
//!
//! Anything expensive to build and reusable — compute pipelines, bind-group layouts — is a
//! [`Cacheable`] with a typed key listing everything that changes what gets built. The
//! [`ResourceCache`] builds each key once and hands out shared references after that.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::context::{Context, lock};
use crate::error::{Error, Result};
use crate::kernel::{ComputeKernel, PipelineKey};

/// A GPU object the [`ResourceCache`] can build from a key and keep.
pub trait Cacheable: Send + Sync + Sized + 'static {
    /// Everything that changes the built object (kernel, dtype, override constants, ...).
    /// Runtime shapes are *not* part of keys: they travel as parameters.
    type Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static;

    /// Builds the object. May fetch other objects from `cache` (it is not locked meanwhile).
    fn create(key: &Self::Key, ctx: &Context, cache: &ResourceCache) -> Result<Self>;
}

/// Hit/miss counters of a [`ResourceCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to build the object.
    pub misses: u64,
    /// Objects held (bind groups not counted).
    pub entries: usize,
    /// Dispatches whose storage bind group was already built.
    pub bind_group_hits: u64,
    /// Storage bind groups built.
    pub bind_group_misses: u64,
    /// Time spent building objects on misses (compute pipelines: shader translation and the
    /// driver's compile, the bulk of a cold start's first pass).
    pub build_time: std::time::Duration,
}

/// Compiled GPU objects by key, for one [`Context`]. Cheap to clone (shared); `Send + Sync`.
///
/// ```
/// use metallic::{Context, ResourceCache};
/// let ctx = Context::new()?;
/// let cache = ResourceCache::new(&ctx);
/// assert_eq!(cache.stats().entries, 0);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Clone)]
pub struct ResourceCache {
    ctx: Context,
    inner: Arc<Mutex<Inner>>,
    bind_groups: Arc<Mutex<BindGroups>>,
}

/// Most bind groups kept; past it the map is emptied and refills with what is in use.
const MAX_BIND_GROUPS: usize = 4096;

/// Storage bind groups by the buffer ranges they bind. A hot loop that binds the same ranges
/// every step (an LLM decode step over preallocated activations, weights and KV cache) builds
/// its bind groups once.
#[derive(Default)]
struct BindGroups {
    map: HashMap<BindKey, wgpu::BindGroup>,
    hits: u64,
    misses: u64,
}

/// The layout (by its number of storage bindings) and `(buffer, offset, size)` of each binding.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    bindings: u32,
    ranges: Vec<(wgpu::Buffer, u64, u64)>,
}

#[derive(Default)]
struct Inner {
    /// One `HashMap<R::Key, Arc<R>>` per resource type.
    maps: HashMap<TypeId, Box<dyn ErasedMap>>,
    stats: CacheStats,
}

/// A `HashMap<R::Key, Arc<R>>` with its types erased.
trait ErasedMap: Send + Sync {
    fn len(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> ErasedMap for HashMap<K, V> {
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Inner {
    fn map<R: Cacheable>(&mut self) -> Result<&mut HashMap<R::Key, Arc<R>>> {
        self.maps
            .entry(TypeId::of::<R>())
            .or_insert_with(|| Box::new(HashMap::<R::Key, Arc<R>>::new()))
            .as_any_mut()
            .downcast_mut::<HashMap<R::Key, Arc<R>>>()
            .ok_or_else(|| Error::invalid("ResourceCache", "map type does not match its TypeId"))
    }

    fn count(&mut self) {
        self.stats.entries = self.maps.values().map(|m| m.len()).sum();
    }
}

impl ResourceCache {
    /// An empty cache for objects of `ctx`'s device.
    pub fn new(ctx: &Context) -> Self {
        ResourceCache { ctx: ctx.clone(), inner: Arc::default(), bind_groups: Arc::default() }
    }

    /// The context whose device the cached objects belong to.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The object for `key`, built on first use.
    pub fn get<R: Cacheable>(&self, key: &R::Key) -> Result<Arc<R>> {
        {
            let mut inner = lock(&self.inner);
            if let Some(found) = inner.map::<R>()?.get(key).cloned() {
                inner.stats.hits += 1;
                return Ok(found);
            }
        }
        // Build without holding the lock: creation may itself use the cache.
        let building = std::time::Instant::now();
        let built = Arc::new(R::create(key, &self.ctx, self)?);
        let took = building.elapsed();
        let mut inner = lock(&self.inner);
        inner.stats.misses += 1;
        inner.stats.build_time += took;
        // If another thread built the same key meanwhile, keep the first one.
        let kept = Arc::clone(inner.map::<R>()?.entry(key.clone()).or_insert(built));
        inner.count();
        Ok(kept)
    }

    /// The object for `key` if it was built before; [`Error::ResourceNotCached`] otherwise.
    /// Hot loops use this to prove they compile nothing.
    pub fn get_cached<R: Cacheable>(&self, key: &R::Key) -> Result<Arc<R>> {
        let mut inner = lock(&self.inner);
        match inner.map::<R>()?.get(key).cloned() {
            Some(found) => {
                inner.stats.hits += 1;
                Ok(found)
            }
            None => Err(Error::ResourceNotCached { key: format!("{key:?}") }),
        }
    }

    /// The bind group of `layout` (a layout of `bindings` storage buffers) over `ranges`
    /// (`(buffer, offset, size)` per binding, in binding order), built on first use. Cached bind
    /// groups keep their buffers alive until [`clear`](Self::clear) or until the cache, past
    /// 4096 of them, starts over.
    pub(crate) fn bind_group(
        &self,
        layout: &wgpu::BindGroupLayout,
        bindings: u32,
        ranges: &[(&wgpu::Buffer, u64, u64)],
        label: &str,
    ) -> wgpu::BindGroup {
        let key = BindKey { bindings, ranges: ranges.iter().map(|&(b, o, s)| (b.clone(), o, s)).collect() };
        let mut groups = lock(&self.bind_groups);
        if let Some(found) = groups.map.get(&key) {
            let found = found.clone();
            groups.hits += 1;
            return found;
        }
        let entries: Vec<wgpu::BindGroupEntry<'_>> = ranges
            .iter()
            .zip(0u32..)
            .map(|(&(buffer, offset, size), binding)| wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: wgpu::BufferSize::new(size),
                }),
            })
            .collect();
        let group = self.ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout,
            entries: &entries,
        });
        if groups.map.len() >= MAX_BIND_GROUPS {
            groups.map.clear();
        }
        groups.misses += 1;
        groups.map.insert(key, group.clone());
        group
    }

    /// The keys of the compute pipelines built so far (in no particular order).
    pub fn pipeline_keys(&self) -> Vec<PipelineKey> {
        let mut inner = lock(&self.inner);
        inner.map::<ComputeKernel>().map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// Builds the pipelines of `keys` that are not built yet, on up to `threads` threads at
    /// once (driver compiles run in parallel); returns how many it built. A key this adapter
    /// cannot build is skipped: recording the op that needs it reports the error then.
    pub fn precompile(&self, keys: &[PipelineKey], threads: usize) -> usize {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let built = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            loop {
                let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(key) = keys.get(at) else { break };
                let known = lock(&self.inner).map::<ComputeKernel>().is_ok_and(|m| m.contains_key(key));
                if !known && self.get::<ComputeKernel>(key).is_ok() {
                    built.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads.clamp(1, keys.len().max(1)) {
                scope.spawn(work);
            }
            work();
        });
        built.into_inner()
    }

    /// Hit/miss counters and entry count.
    pub fn stats(&self) -> CacheStats {
        let mut stats = lock(&self.inner).stats;
        let groups = lock(&self.bind_groups);
        stats.bind_group_hits = groups.hits;
        stats.bind_group_misses = groups.misses;
        stats
    }

    /// Drops every cached object (they stay alive while in use elsewhere).
    pub fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.maps.clear();
        inner.stats.entries = 0;
        lock(&self.bind_groups).map.clear();
    }
}

impl fmt::Debug for ResourceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}
