//! Tensor creation, host I/O, views and their errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::random::RandomUniform;
use metallic::{DType, Error, Shape, Tensor, f16};

#[test]
fn constructors_fill_every_element() {
    let rt = runtime();
    for dtype in float_dtypes(&rt).into_iter().chain([DType::U32]) {
        for n in [1usize, 7, 257, 5000] {
            let z = Tensor::zeros(&rt, [n], dtype).unwrap();
            assert!(z.to_vec_f32().unwrap().iter().all(|&v| v == 0.0), "zeros {dtype} {n}");
            let o = Tensor::ones(&rt, [n], dtype).unwrap();
            assert!(o.to_vec_f32().unwrap().iter().all(|&v| v == 1.0), "ones {dtype} {n}");
            let f = Tensor::full(&rt, [n], dtype, 3.0).unwrap();
            assert!(f.to_vec_f32().unwrap().iter().all(|&v| v == 3.0), "full {dtype} {n}");
            assert!(f.zeros_like().unwrap().to_vec_f32().unwrap().iter().all(|&v| v == 0.0));
            assert!(f.ones_like().unwrap().to_vec_f32().unwrap().iter().all(|&v| v == 1.0));
            assert_eq!(f.zeros_like().unwrap().shape(), f.shape());
        }
    }
}

#[test]
fn from_slice_round_trips_every_dtype() {
    let rt = runtime();
    let f: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
    assert_eq!(Tensor::from_slice(&rt, [37], &f).unwrap().to_vec::<f32>().unwrap(), f);
    let h: Vec<f16> = f.iter().map(|&x| f16::from_f32(x)).collect();
    // Odd element count: the last f16 shares a word with padding.
    assert_eq!(Tensor::from_slice(&rt, [37], &h).unwrap().to_vec::<f16>().unwrap(), h);
    let u: Vec<u32> = (0..37).map(|i| i * 1_000_003).collect();
    assert_eq!(Tensor::from_vec(&rt, [37], u.clone()).unwrap().to_vec::<u32>().unwrap(), u);
    let scalar = Tensor::from_slice(&rt, Shape::new(&[]).unwrap(), &[5.0f32]).unwrap();
    assert_eq!(scalar.numel(), 1);
    assert_eq!(scalar.to_vec::<f32>().unwrap(), [5.0]);
}

#[test]
fn arange_matches_reference() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let t = Tensor::arange(&rt, -2.0, 3.0, 0.5, dtype).unwrap();
        assert_eq!(t.dims(), &[10]);
        let want: Vec<f64> = (0..10).map(|i| -2.0 + 0.5 * i as f64).collect();
        assert_close(&t.to_vec_f32().unwrap(), &want, 0.0, "arange");
    }
    let ids = Tensor::arange(&rt, 0.0, 1000.0, 1.0, DType::U32).unwrap();
    assert_eq!(ids.to_vec::<u32>().unwrap(), (0..1000).collect::<Vec<u32>>());
    let down = Tensor::arange(&rt, 5.0, 0.0, -1.0, DType::F32).unwrap();
    assert_eq!(down.to_vec::<f32>().unwrap(), [5.0, 4.0, 3.0, 2.0, 1.0]);
    for (start, end, step) in [(0.0, 1.0, 0.0), (0.0, 1.0, -1.0), (0.0, f32::INFINITY, 1.0), (f32::NAN, 1.0, 1.0)] {
        let err = Tensor::arange(&rt, start, end, step, DType::F32).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op: "Tensor::arange", .. }), "{err}");
    }
}

#[test]
fn random_uniform_matches_its_host_twin_and_is_deterministic() {
    let rt = runtime();
    let n = 10_007;
    let (low, high, seed) = (-3.0f32, 5.0f32, 0xDEAD_BEEF_1234_5678u64);
    let t = Tensor::random_uniform(&rt, [n], DType::F32, low, high, seed).unwrap();
    let got = t.to_vec::<f32>().unwrap();
    let want: Vec<f64> = (0..n as u32).map(|i| RandomUniform::reference(seed, low, high, i)).collect();
    assert_close(&got, &want, 1e-6, "random_uniform");
    assert!(got.iter().all(|&v| (low..high).contains(&v)));
    let mean = got.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    assert!((mean - 1.0).abs() < 0.1, "mean {mean} far from 1.0");
    // Same seed, same values; another seed, other values.
    let again = Tensor::random_uniform(&rt, [n], DType::F32, low, high, seed).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(got, again);
    let other = Tensor::random_uniform(&rt, [n], DType::F32, low, high, seed + 1).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(got, other);
    let bad = Tensor::random_uniform(&rt, [3], DType::F32, 1.0, 0.0, 1).unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument { op: "random_uniform", .. }), "{bad}");
    let ids = Tensor::random_uniform(&rt, [3], DType::U32, 0.0, 1.0, 1).unwrap_err();
    assert!(matches!(ids, Error::DTypeMismatch { .. }), "{ids}");
}

#[test]
fn reshape_flatten_narrow_and_get_batch_share_the_buffer() {
    let rt = runtime();
    let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let t = Tensor::from_slice(&rt, [2, 3, 4], &data).unwrap();
    assert_eq!(t.strides().as_slice(), &[12, 4, 1]);
    let r = t.reshape([6, 4]).unwrap();
    assert_eq!(r.dims(), &[6, 4]);
    assert_eq!(r.to_vec::<f32>().unwrap(), data);
    assert_eq!(t.flatten().unwrap().dims(), &[24]);
    let n = r.narrow(2, 3).unwrap();
    assert_eq!(n.dims(), &[3, 4]);
    assert_eq!(n.byte_offset(), t.byte_offset() + 2 * 4 * 4);
    assert_eq!(n.to_vec::<f32>().unwrap(), data[8..20]);
    let b = t.get_batch(1).unwrap();
    assert_eq!(b.dims(), &[3, 4]);
    assert_eq!(b.to_vec::<f32>().unwrap(), data[12..]);
    assert_eq!(b.get_batch(2).unwrap().to_vec::<f32>().unwrap(), data[20..]);
    // A write through a view lands in the parent.
    b.get_batch(0).unwrap().fill(-1.0).unwrap();
    let all = t.to_vec::<f32>().unwrap();
    assert_eq!(&all[12..16], &[-1.0; 4]);
    assert_eq!(&all[..12], &data[..12]);
    assert_eq!(&all[16..], &data[16..]);

    assert!(matches!(t.reshape([5, 5]), Err(Error::ShapeMismatch { op: "reshape", .. })));
    assert!(matches!(t.narrow(1, 2), Err(Error::InvalidArgument { op: "narrow", .. })));
    assert!(matches!(t.get_batch(2), Err(Error::InvalidArgument { op: "narrow", .. })));
    let scalar = Tensor::zeros(&rt, Shape::new(&[]).unwrap(), DType::F32).unwrap();
    assert!(matches!(scalar.get_batch(0), Err(Error::InvalidArgument { .. })));
}

#[test]
fn f16_writes_at_odd_offsets_keep_their_neighbours() {
    // Host writes need no shader f16 support: this runs on every adapter.
    let rt = runtime();
    let base: Vec<f16> = (0..9).map(|i| f16::from_f32(i as f32)).collect();
    let t = Tensor::from_slice(&rt, [9], &base).unwrap();
    let view = t.narrow(3, 3).unwrap(); // bytes 6..12: starts mid-word
    view.write(&[f16::from_f32(-1.0), f16::from_f32(-2.0), f16::from_f32(-3.0)]).unwrap();
    let got: Vec<f32> = t.to_vec::<f16>().unwrap().iter().map(|x| x.to_f32()).collect();
    assert_eq!(got, [0.0, 1.0, 2.0, -1.0, -2.0, -3.0, 6.0, 7.0, 8.0]);
}

#[test]
fn host_io_errors() {
    let rt = runtime();
    let t = Tensor::zeros(&rt, [4], DType::F32).unwrap();
    assert!(matches!(
        t.to_vec::<u32>(),
        Err(Error::DTypeMismatch { op: "Tensor::to_vec", expected: DType::F32, got: DType::U32 })
    ));
    assert!(matches!(t.write(&[1.0f32; 3]), Err(Error::InvalidArgument { op: "Tensor::write", .. })));
    assert!(matches!(t.write(&[1u32; 4]), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(Tensor::from_slice(&rt, [5], &[1.0f32; 4]), Err(Error::InvalidArgument { .. })));
    let too_many = Shape::new(&[1; 9]).unwrap_err();
    assert!(matches!(too_many, Error::InvalidShape { .. }), "{too_many}");
    let overflow = Shape::new(&[usize::MAX, 2]).unwrap_err();
    assert!(overflow.to_string().contains("overflows"), "{overflow}");
}

#[test]
fn wraps_an_existing_buffer() {
    let rt = runtime();
    let usage = metallic::wgpu::BufferUsages::STORAGE
        | metallic::wgpu::BufferUsages::COPY_SRC
        | metallic::wgpu::BufferUsages::COPY_DST;
    let buffer = rt.context().device().create_buffer(&metallic::wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage,
        mapped_at_creation: false,
    });
    let whole = Tensor::from_existing_buffer(&rt, buffer.clone(), 0, [16], DType::F32).unwrap();
    whole.write(&(0..16).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let tail = Tensor::from_existing_buffer(&rt, buffer.clone(), 40, [6], DType::F32).unwrap();
    assert_eq!(tail.to_vec::<f32>().unwrap(), [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
    let doubled = (&tail * 2.0).unwrap();
    assert_eq!(doubled.to_vec::<f32>().unwrap(), [20.0, 22.0, 24.0, 26.0, 28.0, 30.0]);
    assert!(matches!(
        Tensor::from_existing_buffer(&rt, buffer.clone(), 40, [7], DType::F32),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Tensor::from_existing_buffer(&rt, buffer.clone(), 2, [1], DType::F32),
        Err(Error::InvalidArgument { .. })
    ));
    let uniform = rt.context().device().create_buffer(&metallic::wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: metallic::wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let err = Tensor::from_existing_buffer(&rt, uniform, 0, [4], DType::F32).unwrap_err();
    assert!(err.to_string().contains("lacks"), "{err}");
}

#[test]
fn copy_is_deep() {
    let rt = runtime();
    let a = Tensor::from_slice(&rt, [3], &[1.0f32, 2.0, 3.0]).unwrap();
    let b = a.copy().unwrap();
    a.fill(0.0).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(a.to_vec::<f32>().unwrap(), [0.0; 3]);
}

#[test]
fn many_ops_flush_on_their_own_and_stay_ordered() {
    let rt = runtime();
    let mut t = Tensor::zeros(&rt, [33], DType::F32).unwrap();
    for _ in 0..(metallic::FLUSH_EVERY * 2 + 5) {
        t = (&t + 1.0).unwrap();
    }
    let want = (metallic::FLUSH_EVERY * 2 + 5) as f32;
    assert!(t.to_vec::<f32>().unwrap().iter().all(|&v| v == want));
}
