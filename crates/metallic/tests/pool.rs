//! MemoryPool: alignment, reuse, coalescing, limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::{DType, Error, MemoryPool, PoolConfig, Runtime, Tensor};

fn pool(config: PoolConfig) -> MemoryPool {
    MemoryPool::new(runtime().context(), config)
}

#[test]
fn regions_are_aligned_disjoint_and_reused_after_free() {
    let p = pool(PoolConfig { chunk_bytes: 1 << 20, ..PoolConfig::default() });
    let align = p.alignment();
    assert!(align >= 4 && align.is_power_of_two());
    let a = p.alloc(10).unwrap();
    let b = p.alloc(1000).unwrap();
    let c = p.alloc(1).unwrap();
    for r in [&a, &b, &c] {
        assert_eq!(r.offset() % align, 0);
        assert_eq!(r.size() % align, 0);
    }
    assert!(a.offset() + a.size() <= b.offset() && b.offset() + b.size() <= c.offset());
    let stats = p.stats();
    assert_eq!(stats.chunks, 1);
    assert_eq!(stats.allocations, 3);
    assert_eq!(stats.used_bytes, a.size() + b.size() + c.size());
    assert_eq!(stats.reserved_bytes, 1 << 20);
    let b_offset = b.offset();
    drop(b);
    assert_eq!(p.stats().allocations, 2);
    // The freed region is the best fit for a request of its size.
    let d = p.alloc(900).unwrap();
    assert_eq!(d.offset(), b_offset);
    assert_eq!(p.stats().peak_used_bytes, a.size() + 1000u64.next_multiple_of(align) + c.size());
}

#[test]
fn freed_neighbours_coalesce() {
    let p = pool(PoolConfig { chunk_bytes: 4096, grow: false, ..PoolConfig::default() });
    let quarter = 1024;
    let parts: Vec<_> = (0..4).map(|_| p.alloc(quarter).unwrap()).collect();
    assert!(matches!(p.alloc(1), Err(Error::PoolExhausted { .. })));
    drop(parts);
    // Only a coalesced free list can hold the whole chunk again.
    let whole = p.alloc(4096).unwrap();
    assert_eq!(whole.offset(), 0);
    assert_eq!(p.stats().chunks, 1);
}

#[test]
fn growth_policy_and_limits() {
    let fixed = pool(PoolConfig { chunk_bytes: 4096, grow: false, ..PoolConfig::default() });
    let _first = fixed.alloc(3000).unwrap();
    let err = fixed.alloc(2000).unwrap_err();
    match err {
        Error::PoolExhausted { requested, used, reserved, .. } => {
            assert!(requested >= 2000 && used >= 3000 && reserved == 4096);
        }
        other => panic!("expected PoolExhausted, got {other}"),
    }
    assert!(err_text(&fixed.alloc(2000)).contains("memory pool exhausted"));

    let limited = pool(PoolConfig { chunk_bytes: 4096, limit_bytes: 8192, grow: true });
    let _a = limited.alloc(4096).unwrap();
    let _b = limited.alloc(4096).unwrap();
    assert_eq!(limited.stats().chunks, 2);
    assert!(matches!(limited.alloc(16), Err(Error::PoolExhausted { limit: 8192, .. })));

    // Requests larger than a chunk get a chunk of their own.
    let growing = pool(PoolConfig { chunk_bytes: 4096, ..PoolConfig::default() });
    let big = growing.alloc(10_000).unwrap();
    assert!(big.size() >= 10_000);
    assert_eq!(growing.stats().reserved_bytes, big.size());
    drop(big);
    assert_eq!(growing.trim(), 10_000u64.next_multiple_of(growing.alignment()));
    assert_eq!(growing.stats().chunks, 0);
}

#[test]
fn requests_beyond_the_device_limit_are_errors() {
    let p = pool(PoolConfig::default());
    let max = p.context().caps().limits.max_buffer_size;
    let err = p.alloc(max + 1).unwrap_err();
    assert!(matches!(err, Error::BufferAllocation { what: "max_buffer_size", .. }), "{err}");
    assert!(err.to_string().contains(&max.to_string()), "{err}");
    assert_eq!(p.stats().allocations, 0);
    assert!(matches!(p.alloc(u64::MAX), Err(Error::BufferAllocation { .. })));
}

#[test]
fn tensors_release_their_regions_to_the_runtime_pool() {
    let rt = runtime();
    let before = rt.pool().stats().used_bytes;
    {
        let a = Tensor::zeros(&rt, [1000], DType::F32).unwrap();
        let b = (&a + 1.0).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0; 1000]);
        assert!(rt.pool().stats().used_bytes >= before + 8000);
    }
    assert_eq!(rt.pool().stats().used_bytes, before);
}

#[test]
fn a_fixed_pool_backs_a_runtime() {
    let ctx = context();
    let small = MemoryPool::new(&ctx, PoolConfig { chunk_bytes: 1 << 16, grow: false, limit_bytes: 1 << 16 });
    let rt = Runtime::from_parts(metallic::ResourceCache::new(&ctx), small).unwrap();
    let t = Tensor::ones(&rt, [1000], DType::F32).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0; 1000]);
    let err = Tensor::zeros(&rt, [1 << 16], DType::F32).unwrap_err();
    assert!(matches!(err, Error::PoolExhausted { .. }), "{err}");
}

fn err_text<T: std::fmt::Debug>(r: &metallic::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}
