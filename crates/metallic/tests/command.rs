//! Operation / CommandBuffer: user-defined ops, batching, parameter paths, GPU errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::elementwise::{Binary, BinaryOp};
use metallic::{
    ComputeEncoder, DType, Dispatch, Error, Kernel, Operation, Overrides, ParamMode, ResourceCache, Tensor,
};

/// A user-defined op: `y = alpha * x + y`, written only against the public API.
static SAXPY: Kernel = Kernel {
    name: "test_saxpy",
    source: "struct Params { n: u32, x_off: u32, y_off: u32, alpha: f32 }\n\
             @group(0) @binding(0) var<storage, read_write> x: array<T>;\n\
             @group(0) @binding(1) var<storage, read_write> y: array<T>;\n\
             @compute @workgroup_size(WG)\n\
             fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {\n\
                 let i = linear_index(gid, nwg);\n\
                 if i >= params.n { return; }\n\
                 y[params.y_off + i] = T(params.alpha * f32(x[params.x_off + i]) + f32(y[params.y_off + i]));\n\
             }",
    entry: "main",
    bindings: 2,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SaxpyParams {
    n: u32,
    x_off: u32,
    y_off: u32,
    alpha: f32,
}

struct Saxpy {
    alpha: f32,
    x: Tensor,
    y: Tensor,
}

impl Operation for Saxpy {
    fn name(&self) -> &'static str {
        "saxpy"
    }
    fn validate(&self) -> metallic::Result<()> {
        if self.x.shape() != self.y.shape() {
            return Err(Error::ShapeMismatch { op: "saxpy", lhs: self.x.dims().to_vec(), rhs: self.y.dims().to_vec() });
        }
        Ok(())
    }
    fn encode(&self, enc: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> metallic::Result<()> {
        let x = enc.bind(&self.x)?;
        let y = enc.bind(&self.y)?;
        let n = self.x.numel();
        let params = SaxpyParams { n: n as u32, x_off: x.elem_offset(), y_off: y.elem_offset(), alpha: self.alpha };
        let workgroups = enc.linear_grid(n, 64)?;
        enc.dispatch(
            cache,
            Dispatch {
                kernel: &SAXPY,
                dtype: self.x.dtype(),
                overrides: Overrides::new(&[("WG", 64.0)])?,
                bindings: &[&x, &y],
                params,
                workgroups,
            },
        )
    }
}

#[test]
fn user_defined_operation_runs_in_an_explicit_command_buffer() {
    for rt in runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(9);
            let (x, xv) = upload(&rt, &[1001], dtype, &rng.vec(1001, -1.0, 1.0));
            let (y, yv) = upload(&rt, &[1001], dtype, &rng.vec(1001, -1.0, 1.0));
            let mut cb = rt.command_buffer().unwrap();
            assert!(cb.is_empty());
            cb.record(&Saxpy { alpha: 2.0, x: x.clone(), y: y.clone() }).unwrap();
            cb.record(&Saxpy { alpha: 2.0, x: x.clone(), y: y.clone() }).unwrap();
            assert_eq!((cb.len(), cb.dispatches()), (2, 2));
            cb.commit().unwrap();
            assert!(cb.is_empty());
            cb.wait().unwrap();
            let want: Vec<f64> = xv.iter().zip(&yv).map(|(a, b)| 4.0 * a + b).collect();
            assert_close(&y.to_vec_f32().unwrap(), &want, tolerance(dtype) * 4.0, &format!("saxpy {dtype}"));
        }
    }
}

#[test]
fn record_validates_first() {
    let rt = runtime();
    let x = Tensor::zeros(&rt, [4], DType::F32).unwrap();
    let y = Tensor::zeros(&rt, [5], DType::F32).unwrap();
    let mut cb = rt.command_buffer().unwrap();
    let err = cb.record(&Saxpy { alpha: 1.0, x, y }).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "saxpy", .. }), "{err}");
    assert!(err.to_string().contains("[4]") && err.to_string().contains("[5]"), "{err}");
    assert!(cb.is_empty());
}

#[test]
fn hundreds_of_dispatches_in_one_command_buffer_on_both_parameter_paths() {
    for rt in runtimes() {
        let t = Tensor::zeros(&rt, [300], DType::F32).unwrap();
        let mut cb = rt.command_buffer().unwrap();
        // More dispatches than one uniform-arena block holds (256 slots).
        for i in 0..600 {
            cb.record(&Binary::scalar(BinaryOp::Add, &t, (i % 3) as f32, &t).unwrap()).unwrap();
        }
        cb.commit().unwrap();
        cb.wait().unwrap();
        assert!(t.to_vec::<f32>().unwrap().iter().all(|&v| v == 600.0), "{:?}", rt.context().caps().params);
    }
}

#[test]
fn the_uniform_parameter_path_is_really_used() {
    let rt = runtime_with(ParamMode::Uniform);
    assert_eq!(rt.context().caps().params, ParamMode::Uniform);
    let a = Tensor::arange(&rt, 0.0, 5.0, 1.0, DType::F32).unwrap();
    assert_eq!((&a * 3.0).unwrap().to_vec::<f32>().unwrap(), [0.0, 3.0, 6.0, 9.0, 12.0]);
}

#[test]
fn wrong_binding_count_or_oversized_params_are_errors() {
    struct Bad(Tensor, bool);
    impl Operation for Bad {
        fn name(&self) -> &'static str {
            "bad"
        }
        fn validate(&self) -> metallic::Result<()> {
            Ok(())
        }
        fn encode(&self, enc: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> metallic::Result<()> {
            let x = enc.bind(&self.0)?;
            let overrides = Overrides::default();
            if self.1 {
                enc.dispatch(
                    cache,
                    Dispatch {
                        kernel: &SAXPY,
                        dtype: DType::F32,
                        overrides,
                        bindings: &[&x],
                        params: 0u32,
                        workgroups: [1, 1, 1],
                    },
                )
            } else {
                let params = [0u32; 40];
                enc.dispatch(
                    cache,
                    Dispatch {
                        kernel: &SAXPY,
                        dtype: DType::F32,
                        overrides,
                        bindings: &[&x, &x],
                        params,
                        workgroups: [1, 1, 1],
                    },
                )
            }
        }
    }
    let rt = runtime();
    let t = Tensor::zeros(&rt, [4], DType::F32).unwrap();
    let mut cb = rt.command_buffer().unwrap();
    let err = cb.record(&Bad(t.clone(), true)).unwrap_err();
    assert!(err.to_string().contains("binds 2 buffers, 1 given"), "{err}");
    let err = cb.record(&Bad(t, false)).unwrap_err();
    assert!(err.to_string().contains("160 bytes"), "{err}");
}

#[test]
fn gpu_timestamps_measure_the_committed_work() {
    let rt = runtime();
    assert!(rt.context().caps().timestamps(), "the test adapter offers TIMESTAMP_QUERY");
    let t = Tensor::zeros(&rt, [1 << 16], DType::F32).unwrap();
    let mut cb = rt.command_buffer().unwrap();
    assert_eq!(cb.gpu_time().unwrap(), None, "nothing timed yet");
    cb.enable_gpu_timing().unwrap();
    let time = |cb: &mut metallic::CommandBuffer, ops: usize| {
        for _ in 0..ops {
            cb.record(&Binary::scalar(BinaryOp::Add, &t, 1.0, &t).unwrap()).unwrap();
        }
        cb.commit().unwrap();
        cb.gpu_time().unwrap().expect("a timed commit")
    };
    let one = time(&mut cb, 1);
    let many = time(&mut cb, 40);
    assert!(one.as_nanos() > 0, "{one:?}");
    assert!(many > one, "40 dispatches ({many:?}) should take longer than one ({one:?})");
    assert!(t.to_vec::<f32>().unwrap().iter().all(|&v| v == 41.0));
}

/// Kernel profiling charges each dispatch's GPU time to its kernel, where the adapter can
/// write timestamps inside passes; elsewhere it says which feature is missing.
#[test]
fn kernel_profiling_times_each_kernel() {
    let rt = runtime();
    let inside = metallic::wgpu::Features::TIMESTAMP_QUERY | metallic::wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    let a = metallic::Tensor::full(&rt, [1 << 16], metallic::DType::F32, 1.0).unwrap();
    let out = a.empty_like().unwrap();
    let mut cb = rt.command_buffer().unwrap();
    if !rt.context().caps().features.contains(inside) {
        let err = cb.enable_kernel_profiling().unwrap_err();
        assert!(err.to_string().contains("TIMESTAMP_QUERY_INSIDE_PASSES"), "{err}");
        return;
    }
    cb.enable_kernel_profiling().unwrap();
    for _ in 0..3 {
        cb.record(&Binary::new(BinaryOp::Add, &a, &a, &out).unwrap()).unwrap();
    }
    cb.record(&metallic::kernels::unary::Unary::new(metallic::kernels::unary::UnaryOp::Exp, &a, &out).unwrap())
        .unwrap();
    cb.commit().unwrap();
    let profile = cb.kernel_profile();
    let calls: Vec<(&str, u64)> = profile.iter().map(|k| (k.kernel, k.dispatches)).collect();
    assert!(profile.iter().all(|k| k.workgroups.iter().all(|&w| w > 0)), "{profile:?}");
    assert!(calls.contains(&("binary", 3)) && calls.contains(&("unary", 1)), "{calls:?}");
    assert!(profile.iter().all(|k| k.total > std::time::Duration::ZERO), "{profile:?}");
    assert!(cb.kernel_profile().is_empty(), "reading clears the totals");
    assert!((out.to_vec::<f32>().unwrap()[0] - 1f32.exp()).abs() < 1e-6);
    // Disabled: later dispatches are not timed (and commits no longer wait for them).
    cb.disable_kernel_profiling().unwrap();
    cb.record(&Binary::new(BinaryOp::Add, &a, &a, &out).unwrap()).unwrap();
    cb.commit().unwrap();
    cb.wait().unwrap();
    assert!(cb.kernel_profile().is_empty(), "profiling stopped");
    assert!((out.to_vec::<f32>().unwrap()[0] - 2.0).abs() < 1e-6);
}
