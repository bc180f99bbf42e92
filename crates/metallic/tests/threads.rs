//! One device, many threads: each thread records, submits and reads back on its own runtime,
//! and a runtime shared by all threads stays consistent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::{DType, Tensor};

#[test]
fn threads_with_their_own_runtimes_on_one_device_get_correct_results() {
    let ctx = context();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let ctx = ctx.clone();
            s.spawn(move || {
                let rt = metallic::Runtime::with_context(&ctx).unwrap();
                for i in 0..25u32 {
                    let n = 1 + (t * 97 + i * 31) as usize % 5000;
                    let x = Tensor::arange(&rt, 0.0, n as f32, 1.0, DType::F32).unwrap();
                    let y = ((&x * 2.0).unwrap() + t as f32).unwrap();
                    let got = y.to_vec::<f32>().unwrap();
                    for (k, v) in got.iter().enumerate() {
                        assert_eq!(*v, 2.0 * k as f32 + t as f32, "thread {t} iteration {i} element {k}");
                    }
                }
            });
        }
    });
}

#[test]
fn one_runtime_shared_by_threads_stays_consistent() {
    let rt = runtime();
    let counters: Vec<Tensor> = (0..6).map(|_| Tensor::zeros(&rt, [257], DType::F32).unwrap()).collect();
    std::thread::scope(|s| {
        for c in &counters {
            s.spawn(move || {
                for _ in 0..100 {
                    c.runtime()
                        .record(
                            &metallic::kernels::elementwise::Binary::scalar(
                                metallic::kernels::elementwise::BinaryOp::Add,
                                c,
                                1.0,
                                c,
                            )
                            .unwrap(),
                        )
                        .unwrap();
                }
            });
        }
    });
    for c in &counters {
        assert!(c.to_vec::<f32>().unwrap().iter().all(|&v| v == 100.0));
    }
}
