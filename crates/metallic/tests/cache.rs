//! ResourceCache: compile once per key; keys tell variants apart; errors name the kernel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::{
    Cacheable, ComputeKernel, Context, DType, Error, Kernel, Overrides, PipelineKey, ResourceCache, ShaderVariant,
    Tensor,
};

static DOUBLE: Kernel = Kernel {
    name: "test_double",
    source: "struct Params { n: u32 }\n\
             @group(0) @binding(0) var<storage, read_write> x: array<T>;\n\
             @compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) g: vec3<u32>) {\n\
                 if g.x < params.n { x[g.x] = x[g.x] * T(2); }\n\
             }",
    entry: "main",
    bindings: 1,
};

static BROKEN: Kernel = Kernel {
    name: "test_broken",
    source: "struct Params { n: u32 }\n@compute @workgroup_size(1) fn main() { let x: u32 = undefined_thing; }",
    entry: "main",
    bindings: 0,
};

fn key(ctx: &Context, dtype: DType, wg: f64) -> PipelineKey {
    let variant = ShaderVariant { dtype, kv: dtype, params: ctx.caps().params, subgroups: ctx.caps().subgroups() };
    PipelineKey { kernel: &DOUBLE, variant, overrides: Overrides::new(&[("WG", wg)]).unwrap() }
}

#[test]
fn the_same_key_compiles_once() {
    let rt = runtime();
    let cache = ResourceCache::new(rt.context());
    let k = key(rt.context(), DType::F32, 64.0);
    let first = cache.get::<ComputeKernel>(&k).unwrap();
    let after_first = cache.stats();
    assert_eq!(after_first.hits, 0);
    let second = cache.get::<ComputeKernel>(&k).unwrap();
    let stats = cache.stats();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.misses, after_first.misses);
    assert_eq!(stats.entries, after_first.entries);
}

#[test]
fn keys_tell_dtype_and_overrides_apart() {
    let rt = runtime();
    let cache = ResourceCache::new(rt.context());
    let a = cache.get::<ComputeKernel>(&key(rt.context(), DType::F32, 64.0)).unwrap();
    let b = cache.get::<ComputeKernel>(&key(rt.context(), DType::F32, 128.0)).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &b));
    if rt.context().caps().shader_f16() {
        let c = cache.get::<ComputeKernel>(&key(rt.context(), DType::F16, 64.0)).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&a, &c));
    }
    assert_ne!(key(rt.context(), DType::F32, 64.0), key(rt.context(), DType::F32, 128.0));
    assert_eq!(key(rt.context(), DType::F32, 64.0), key(rt.context(), DType::F32, 64.0));
}

#[test]
fn ops_hit_the_cache_after_their_first_use() {
    let rt = runtime();
    let a = Tensor::ones(&rt, [10], DType::F32).unwrap();
    let _ = (&a + &a).unwrap().to_vec::<f32>().unwrap();
    let warm = rt.cache().stats();
    for _ in 0..5 {
        let _ = (&a + &a).unwrap();
    }
    rt.synchronize().unwrap();
    let after = rt.cache().stats();
    assert_eq!(after.misses, warm.misses, "a warm op compiled again");
    assert_eq!(after.entries, warm.entries);
    assert!(after.hits >= warm.hits + 5);
}

#[test]
fn get_cached_never_compiles() {
    let rt = runtime();
    let cache = ResourceCache::new(rt.context());
    let k = key(rt.context(), DType::F32, 32.0);
    let err = cache.get_cached::<ComputeKernel>(&k).unwrap_err();
    assert!(matches!(err, Error::ResourceNotCached { .. }));
    assert!(err.to_string().contains("test_double"), "{err}");
    cache.get::<ComputeKernel>(&k).unwrap();
    cache.get_cached::<ComputeKernel>(&k).unwrap();
    cache.clear();
    assert_eq!(cache.stats().entries, 0);
    assert!(cache.get_cached::<ComputeKernel>(&k).is_err());
}

#[test]
fn shader_errors_name_the_kernel_and_carry_the_compiler_message() {
    let rt = runtime();
    let variant =
        ShaderVariant { dtype: DType::F32, kv: DType::F32, params: rt.context().caps().params, subgroups: false };
    let k = PipelineKey { kernel: &BROKEN, variant, overrides: Overrides::default() };
    let err = rt.cache().get::<ComputeKernel>(&k).unwrap_err();
    match &err {
        Error::ShaderCompilation { kernel, message } => {
            assert_eq!(kernel, "test_broken");
            assert!(message.contains("undefined_thing"), "compiler message lost: {message}");
        }
        other => panic!("expected ShaderCompilation, got {other}"),
    }
    // The failure is not cached as a success, and the device is still usable.
    assert!(rt.cache().get::<ComputeKernel>(&k).is_err());
    assert_eq!(Tensor::ones(&rt, [2], DType::F32).unwrap().to_vec::<f32>().unwrap(), [1.0, 1.0]);
}

#[test]
fn unknown_override_is_a_compile_error() {
    let rt = runtime();
    let variant =
        ShaderVariant { dtype: DType::F32, kv: DType::F32, params: rt.context().caps().params, subgroups: false };
    let k = PipelineKey { kernel: &DOUBLE, variant, overrides: Overrides::new(&[("NO_SUCH_CONSTANT", 1.0)]).unwrap() };
    let err = rt.cache().get::<ComputeKernel>(&k).unwrap_err();
    assert!(matches!(&err, Error::ShaderCompilation { kernel, .. } if kernel == "test_double"), "{err}");
    assert!(Overrides::new(&[("A", 1.0); metallic::MAX_OVERRIDES + 1]).is_err());
    assert!(Overrides::new(&[("A", 1.0); metallic::MAX_OVERRIDES]).is_ok());
}

/// Any type can live in the cache: here, a count of how often it was built.
struct Built(u32);

static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Cacheable for Built {
    type Key = (&'static str, u32);
    fn create(key: &Self::Key, _ctx: &Context, _cache: &ResourceCache) -> metallic::Result<Self> {
        BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A build takes time, as a pipeline's does (`CacheStats::build_time` counts it).
        std::thread::sleep(std::time::Duration::from_millis(1));
        Ok(Built(key.1 * 10))
    }
}

#[test]
fn user_types_are_cacheable() {
    let rt = runtime();
    let cache = ResourceCache::new(rt.context());
    let before = BUILDS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(cache.get::<Built>(&("x", 4)).unwrap().0, 40);
    assert_eq!(cache.get::<Built>(&("x", 4)).unwrap().0, 40);
    assert_eq!(cache.get::<Built>(&("y", 4)).unwrap().0, 40);
    assert_eq!(BUILDS.load(std::sync::atomic::Ordering::SeqCst) - before, 2);
    let stats = cache.stats();
    assert_eq!(
        stats,
        metallic::CacheStats {
            hits: 1,
            misses: 2,
            entries: 2,
            bind_group_hits: 0,
            bind_group_misses: 0,
            build_time: stats.build_time
        }
    );
    assert!(stats.build_time >= std::time::Duration::from_millis(2), "the two builds took 1 ms each");
}

/// A loop that runs the same ops over the same tensors (an LLM decode step) builds its bind
/// groups once: views of one allocation bind the whole allocation, so a moving view (the next
/// KV-cache row) reuses them too. Results stay right.
#[test]
fn repeated_dispatches_reuse_bind_groups() {
    use metallic::kernels::elementwise::{Binary, BinaryOp};
    let rt = runtime();
    let a =
        metallic::Tensor::from_slice(&rt, [4, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0])
            .unwrap();
    let b = metallic::Tensor::from_slice(&rt, [3], &[100.0f32, 200.0, 300.0]).unwrap();
    let out = metallic::Tensor::zeros(&rt, [4, 3], metallic::DType::F32).unwrap();
    let step = |row: usize| {
        let (x, y) = (a.get_batch(row).unwrap(), out.get_batch(row).unwrap());
        rt.record(&Binary::new(BinaryOp::Add, &x, &b, &y).unwrap()).unwrap();
    };
    step(0);
    rt.synchronize().unwrap();
    let first = rt.cache().stats();
    for row in 1..4 {
        step(row);
    }
    rt.synchronize().unwrap();
    let after = rt.cache().stats();
    assert_eq!(after.bind_group_misses, first.bind_group_misses, "no new bind group for rows 1..4");
    assert!(after.bind_group_hits >= first.bind_group_hits + 3);
    let want: Vec<f32> = (0..12).map(|i| (i + 1) as f32 + 100.0 * (i % 3 + 1) as f32).collect();
    assert_eq!(out.to_vec::<f32>().unwrap(), want);
}
