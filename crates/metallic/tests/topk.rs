//! Top-k and argmax over rows against a CPU sort: sizes around the 2048-column chunk, several
//! passes, ties, NaN and -inf, views at offsets, f32 and f16.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{Rng, float_dtypes, runtime, upload};
use metallic::kernels::topk::{MAX_K, TopK};
use metallic::{DType, Error, Tensor};

/// The top k of each row: (value, index) sorted by value descending, index ascending; NaN as -inf.
fn reference(values: &[f64], n: usize, k: usize) -> Vec<(f64, u32)> {
    values
        .chunks(n)
        .flat_map(|row| {
            let mut pairs: Vec<(f64, u32)> = row
                .iter()
                .enumerate()
                .map(|(i, &v)| (if v.is_nan() { f64::NEG_INFINITY } else { v }, i as u32))
                .collect();
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            pairs.truncate(k);
            pairs
        })
        .collect()
}

fn check(x: &Tensor, rounded: &[f64], n: usize, k: usize, what: &str) {
    let (values, indices) = x.top_k(k).unwrap();
    let (got_v, got_i) = (values.to_vec::<f32>().unwrap(), indices.to_vec::<u32>().unwrap());
    let want = reference(rounded, n, k);
    for (slot, ((&v, &i), &(wv, wi))) in got_v.iter().zip(&got_i).zip(&want).enumerate() {
        let wv = if wv == f64::NEG_INFINITY { -f64::from(f32::MAX) } else { wv };
        assert_eq!((f64::from(v), i), (wv, wi), "{what}: slot {slot} (row {}, rank {})", slot / k, slot % k);
    }
}

#[test]
fn matches_a_sort_across_chunk_boundaries_and_passes() {
    let rt = runtime();
    let mut rng = Rng::new(7);
    for dtype in float_dtypes(&rt) {
        // 2048 is one chunk; 4097 two passes; 70_000 three passes with k = 40.
        for &(rows, n, k) in
            &[(1, 1, 1), (3, 7, 3), (2, 2048, 5), (2, 2049, 1), (1, 4097, 40), (1, 70_000, 40), (2, 5000, MAX_K)]
        {
            let values = rng.vec(rows * n, -10.0, 10.0);
            let (x, rounded) = upload(&rt, &[rows, n], dtype, &values);
            check(&x, &rounded, n, k, &format!("{dtype} rows {rows} n {n} k {k}"));
        }
    }
}

#[test]
fn ties_nan_and_infinities_rank_as_documented() {
    let rt = runtime();
    let n = 3000;
    let mut values: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect(); // many ties at 4.0
    values[10] = f64::NAN;
    values[11] = f64::INFINITY;
    values[12] = f64::NEG_INFINITY;
    values[2999] = 4.0;
    let (x, rounded) = upload(&rt, &[1, n], DType::F32, &values);
    check(&x, &rounded, n, 8, "ties");
    assert_eq!(x.argmax().unwrap().to_vec::<u32>().unwrap(), [11]);
    // All -inf: every slot still gets an index.
    let (x, rounded) = upload(&rt, &[1, 9], DType::F32, &[f64::NEG_INFINITY; 9]);
    check(&x, &rounded, 9, 4, "all -inf");
}

#[test]
fn views_at_offsets_and_leading_dimensions() {
    let rt = runtime();
    let mut rng = Rng::new(3);
    let values = rng.vec(4 * 3 * 777, -1.0, 1.0);
    let (x, rounded) = upload(&rt, &[4, 3, 777], DType::F32, &values);
    let view = x.get_batch(2).unwrap(); // [3, 777] at an element offset
    check(&view, &rounded[2 * 3 * 777..3 * 3 * 777], 777, 6, "view");
    check(&x, &rounded, 777, 2, "rank 3");
}

#[test]
fn argmax_picks_the_first_maximum() {
    let rt = runtime();
    let x = Tensor::from_slice(&rt, [2, 4], &[1.0f32, 3.0, 3.0, 2.0, -1.0, -1.0, -5.0, -1.0]).unwrap();
    assert_eq!(x.argmax().unwrap().to_vec::<u32>().unwrap(), [1, 0]);
}

#[test]
fn bad_requests_are_errors() {
    let rt = runtime();
    let x = Tensor::zeros(&rt, [2, 10], DType::F32).unwrap();
    let v = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    let i = Tensor::zeros(&rt, [2, 3], DType::U32).unwrap();
    for k in [0, 11] {
        assert!(matches!(x.top_k(k), Err(Error::InvalidArgument { .. })), "k = {k}");
    }
    assert!(matches!(TopK::new(&x, 4, &v, &i), Err(Error::InvalidShape { .. })));
    assert!(matches!(TopK::new(&x, 3, &i, &i), Err(Error::DTypeMismatch { .. })));
    let ids = Tensor::zeros(&rt, [2, 10], DType::U32).unwrap();
    assert!(matches!(ids.top_k(1), Err(Error::DTypeMismatch { .. })));
}
