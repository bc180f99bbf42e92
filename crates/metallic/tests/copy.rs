//! `kernels::copy::Copy`: contiguous copies, vectorised (`vec4<T>`) when both element offsets
//! are multiples of 4, scalar otherwise. The reference is the host slice copy: every result is
//! compared bit for bit, and sentinel-poisoned padding around the destination must survive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{Rng, runtime, runtime_with, runtimes};
use metallic::kernels::copy::Copy;
use metallic::{DType, Error, ParamMode, Runtime, Tensor};

/// Elements after each view, so that a write past its end shows up.
const TAIL_PAD: usize = 5;

/// A sentinel: a quiet NaN for floats (with a payload no copy produces), a marker for u32.
fn sentinel(dtype: DType) -> u32 {
    match dtype {
        DType::F16 => 0x7E5A,
        DType::F32 => 0x7FC0_BEEF,
        _ => 0xDEAD_BEEF,
    }
}

/// Random raw elements of `dtype` (finite normal floats, any u32), as bits.
fn random_bits(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            match dtype {
                // Normal f16: exponent 1..=30, any sign and mantissa.
                DType::F16 => ((r >> 20) as u32 & 0x8000) | (0x0400 + (r as u32 % (0x7C00 - 0x0400))),
                DType::F32 => (rng.uniform(-1e4, 1e4) as f32).to_bits(),
                _ => r as u32,
            }
        })
        .collect()
}

fn upload_bits(rt: &Runtime, shape: &[usize], dtype: DType, bits: &[u32]) -> Tensor {
    match dtype {
        DType::F16 => {
            let v: Vec<metallic::f16> = bits.iter().map(|&b| metallic::f16::from_bits(b as u16)).collect();
            Tensor::from_slice(rt, shape, &v).unwrap()
        }
        DType::F32 => {
            let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            Tensor::from_slice(rt, shape, &v).unwrap()
        }
        _ => Tensor::from_slice(rt, shape, bits).unwrap(),
    }
}

fn download_bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F16 => t.to_vec::<metallic::f16>().unwrap().iter().map(|x| u32::from(x.to_bits())).collect(),
        DType::F32 => t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect(),
        _ => t.to_vec::<u32>().unwrap(),
    }
}

fn dtypes(rt: &Runtime) -> Vec<DType> {
    let mut out = common::float_dtypes(rt);
    out.push(DType::U32);
    out
}

/// Whether the device's storage offset alignment keeps a view's element offset modulo 4 equal
/// to its position in a fresh buffer, as the tests below assume.
fn offsets_follow_padding(rt: &Runtime) -> bool {
    rt.context().caps().storage_alignment().is_multiple_of(16)
}

/// Copies `n` elements from element `src_pad` of one buffer to element `dst_pad` of another
/// (1-D `narrow` views) and checks the copy, the untouched padding, the path taken and the
/// dispatches recorded.
fn check(rt: &Runtime, dtype: DType, n: usize, src_pad: usize, dst_pad: usize, rng: &mut Rng) {
    let what = format!("{dtype} n={n} src_pad={src_pad} dst_pad={dst_pad} params={:?}", rt.context().caps().params);
    let src_bits = random_bits(rng, dtype, src_pad + n + TAIL_PAD);
    let src_all = upload_bits(rt, &[src_bits.len()], dtype, &src_bits);
    let dst_len = dst_pad + n + TAIL_PAD;
    let dst_all = upload_bits(rt, &[dst_len], dtype, &vec![sentinel(dtype); dst_len]);
    let align = rt.context().caps().storage_alignment();
    assert_eq!(src_all.byte_offset() % align, 0, "{what}: fresh tensors start aligned");
    assert_eq!(dst_all.byte_offset() % align, 0, "{what}: fresh tensors start aligned");
    let src = src_all.narrow(src_pad, n).unwrap();
    let dst = dst_all.narrow(dst_pad, n).unwrap();

    let copy = Copy::new(&src, &dst).unwrap();
    let vector = offsets_follow_padding(rt) && src_pad.is_multiple_of(4) && dst_pad.is_multiple_of(4) && n >= 4;
    assert_eq!(copy.vectorised(), vector, "{what}: path");
    let mut cb = rt.command_buffer().unwrap();
    cb.record(&copy).unwrap();
    let dispatches = match (n, vector) {
        (0, _) => 0,
        (_, true) => 1 + usize::from(!n.is_multiple_of(4)),
        (_, false) => 1,
    };
    assert_eq!(cb.dispatches(), dispatches, "{what}: dispatches");
    cb.commit().unwrap();
    cb.wait().unwrap();

    let got = download_bits(&dst_all);
    let mut want = vec![sentinel(dtype); dst_len];
    want[dst_pad..dst_pad + n].copy_from_slice(&src_bits[src_pad..src_pad + n]);
    if let Some(i) = (0..dst_len).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: element {i} (view index {}) is {:#x}, expected {:#x}",
            i as i64 - dst_pad as i64,
            got[i],
            want[i]
        );
    }
    // The source is untouched.
    assert_eq!(download_bits(&src_all), src_bits, "{what}: source changed");
}

const SIZES: [usize; 10] = [0, 1, 3, 4, 5, 7, 8, 13, 1023, 1025];

#[test]
fn aligned_views_every_size_and_dtype_both_param_paths() {
    let mut rng = Rng::new(1);
    for rt in runtimes() {
        for dtype in dtypes(&rt) {
            for n in SIZES.into_iter().chain([4096 * 4 + 3, 257]) {
                for (src_pad, dst_pad) in [(0, 0), (4, 8), (8, 4)] {
                    check(&rt, dtype, n, src_pad, dst_pad, &mut rng);
                }
            }
        }
    }
}

#[test]
fn unaligned_views_on_either_side() {
    let mut rng = Rng::new(2);
    let rt = runtime();
    for dtype in dtypes(&rt) {
        for n in SIZES {
            for (src_pad, dst_pad) in [(1, 0), (0, 1), (2, 4), (4, 2), (3, 3), (1, 2), (3, 8), (8, 3), (2, 2)] {
                check(&rt, dtype, n, src_pad, dst_pad, &mut rng);
            }
        }
    }
}

#[test]
fn unaligned_views_uniform_params() {
    let mut rng = Rng::new(3);
    let rt = runtime_with(ParamMode::Uniform);
    for dtype in dtypes(&rt) {
        for n in [1, 5, 1025] {
            check(&rt, dtype, n, 1, 3, &mut rng);
        }
    }
}

#[test]
fn large_copies_take_several_workgroups() {
    let mut rng = Rng::new(4);
    let rt = runtime();
    for n in [1 << 20, (1 << 20) + 1] {
        check(&rt, DType::F32, n, 0, 4, &mut rng);
        check(&rt, DType::F32, n, 1, 0, &mut rng);
    }
    check(&rt, DType::U32, (1 << 20) + 3, 8, 0, &mut rng);
    if rt.context().caps().shader_f16() {
        check(&rt, DType::F16, (1 << 20) + 2, 4, 12, &mut rng);
    }
}

/// `get_batch` rows of 2-D tensors: offsets of 5, 6, 8 and 12 elements, into a tensor of another
/// shape with the same element count.
#[test]
fn batch_views_and_reshaped_destinations() {
    let mut rng = Rng::new(5);
    let rt = runtime();
    for dtype in dtypes(&rt) {
        for (rows, cols, batch) in [(3, 5, 1), (3, 6, 1), (4, 8, 1), (3, 4, 2), (4, 6, 2), (2, 7, 1)] {
            let what = format!("{dtype} [{rows}, {cols}] row {batch}");
            let bits = random_bits(&mut rng, dtype, rows * cols);
            let x = upload_bits(&rt, &[rows, cols], dtype, &bits);
            let row = x.get_batch(batch).unwrap();
            let dst_all = upload_bits(&rt, &[3, cols], dtype, &vec![sentinel(dtype); 3 * cols]);
            let dst = dst_all.get_batch(1).unwrap();
            let copy = Copy::new(&row, &dst).unwrap();
            let aligned =
                offsets_follow_padding(&rt) && (batch * cols).is_multiple_of(4) && cols.is_multiple_of(4) && cols >= 4;
            assert_eq!(copy.vectorised(), aligned, "{what}: path");
            rt.record(&copy).unwrap();
            let mut want = vec![sentinel(dtype); 3 * cols];
            want[cols..2 * cols].copy_from_slice(&bits[batch * cols..(batch + 1) * cols]);
            assert_eq!(download_bits(&dst_all), want, "{what}");

            // Tensor::copy takes the same op (a fresh, aligned destination).
            let copied = row.copy().unwrap();
            assert_eq!(download_bits(&copied), bits[batch * cols..(batch + 1) * cols], "{what}: Tensor::copy");
        }
    }
    // Shapes may differ when the element counts agree.
    let x = upload_bits(&rt, &[4, 6], DType::U32, &(0..24).collect::<Vec<_>>());
    let y = upload_bits(&rt, &[2, 3, 4], DType::U32, &[7; 24]);
    let copy = Copy::new(&x, &y).unwrap();
    assert!(copy.vectorised());
    rt.record(&copy).unwrap();
    assert_eq!(download_bits(&y), (0..24).collect::<Vec<_>>());
}

#[test]
fn errors() {
    let rt = runtime();
    let a = Tensor::zeros(&rt, [8], DType::F32).unwrap();
    let b = Tensor::zeros(&rt, [7], DType::F32).unwrap();
    assert!(matches!(Copy::new(&a, &b), Err(Error::ShapeMismatch { op: "copy", .. })));
    let c = Tensor::zeros(&rt, [8], DType::U32).unwrap();
    assert!(matches!(
        Copy::new(&a, &c),
        Err(Error::DTypeMismatch { op: "copy", expected: DType::F32, got: DType::U32 })
    ));
    let other = runtime_with(ParamMode::Uniform);
    assert!(!other.context().same_device(rt.context()));
    let d = Tensor::zeros(&other, [8], DType::F32).unwrap();
    assert!(matches!(Copy::new(&a, &d), Err(Error::InvalidArgument { op: "copy", .. })));
}
