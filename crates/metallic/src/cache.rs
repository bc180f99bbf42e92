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
    /// Objects held.
    pub entries: usize,
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
        ResourceCache { ctx: ctx.clone(), inner: Arc::default() }
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
        let built = Arc::new(R::create(key, &self.ctx, self)?);
        let mut inner = lock(&self.inner);
        inner.stats.misses += 1;
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

    /// Hit/miss counters and entry count.
    pub fn stats(&self) -> CacheStats {
        lock(&self.inner).stats
    }

    /// Drops every cached object (they stay alive while in use elsewhere).
    pub fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.maps.clear();
        inner.stats.entries = 0;
    }
}

impl fmt::Debug for ResourceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}
