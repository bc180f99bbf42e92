//! Shared test helpers: a runtime that fails loudly without an adapter, seeded random data,
//! f64 reference comparison.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod attention;

use std::sync::OnceLock;

use metallic::{Context, DType, ParamMode, Runtime, Tensor};

/// The test process's device, shared by every test thread (as a server's threads share one):
/// each test gets its own `Runtime` (cache, pool, command buffer) on it.
pub fn context() -> Context {
    static SHARED: OnceLock<Context> = OnceLock::new();
    SHARED.get_or_init(|| fresh_context(None)).clone()
}

/// A context of its own, for tests that change or break the device. Panics with
/// instructions when no adapter exists: GPU tests never pass by skipping.
pub fn fresh_context(mode: Option<ParamMode>) -> Context {
    let builder = Context::builder().with_env().unwrap();
    let builder = match mode {
        Some(mode) => builder.params(mode),
        None => builder,
    };
    builder.build().unwrap_or_else(|e| {
        panic!("these tests need a GPU adapter ({e}); on Debian install mesa-vulkan-drivers libvulkan1 for lavapipe")
    })
}

/// Held by tests that create or destroy devices of their own, so that none of them runs while
/// another creates, destroys or submits to a device of its own.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A runtime of its own on the shared device.
pub fn runtime() -> Runtime {
    Runtime::with_context(&context()).unwrap()
}

/// A runtime whose kernels take their parameters through `mode` (on a shared device per mode).
pub fn runtime_with(mode: ParamMode) -> Runtime {
    static UNIFORM: OnceLock<Context> = OnceLock::new();
    let ctx = match mode {
        ParamMode::Uniform => UNIFORM.get_or_init(|| fresh_context(Some(mode))).clone(),
        ParamMode::Immediates if context().caps().params == mode => context(),
        ParamMode::Immediates => panic!("the adapter offers no immediates"),
    };
    Runtime::with_context(&ctx).unwrap()
}

/// A runtime on a shared device with subgroups turned off: kernels take their workgroup-memory
/// reduction path.
pub fn runtime_without_subgroups() -> Runtime {
    static NO_SUBGROUPS: OnceLock<Context> = OnceLock::new();
    let ctx = NO_SUBGROUPS
        .get_or_init(|| {
            Context::builder().with_env().unwrap().disable(metallic::wgpu::Features::SUBGROUP).build().unwrap()
        })
        .clone();
    Runtime::with_context(&ctx).unwrap()
}

/// Runtimes covering both reduction flavours: subgroups (where offered) and workgroup memory.
pub fn reduction_runtimes() -> Vec<Runtime> {
    let rt = runtime();
    let mut out = vec![runtime_without_subgroups()];
    if rt.context().caps().subgroups() {
        out.push(rt);
    }
    out
}

/// Both parameter paths where the adapter has immediates, else the uniform one.
pub fn runtimes() -> Vec<Runtime> {
    let rt = runtime();
    match rt.context().caps().params {
        ParamMode::Immediates => vec![rt, runtime_with(ParamMode::Uniform)],
        ParamMode::Uniform => vec![rt],
    }
}

/// The float dtypes the adapter can run (f16 where it has SHADER_F16).
pub fn float_dtypes(rt: &Runtime) -> Vec<DType> {
    if rt.context().caps().shader_f16() { vec![DType::F32, DType::F16] } else { vec![DType::F32] }
}

/// SplitMix64: a seeded generator for host-side test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Uploads f64 values as `dtype` (rounded to it); returns the tensor and the rounded values.
pub fn upload(rt: &Runtime, shape: &[usize], dtype: DType, values: &[f64]) -> (Tensor, Vec<f64>) {
    match dtype {
        DType::F32 => {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            (Tensor::from_slice(rt, shape, &v).unwrap(), v.iter().map(|&x| f64::from(x)).collect())
        }
        DType::F16 => {
            let v: Vec<metallic::f16> = values.iter().map(|&x| metallic::f16::from_f64(x)).collect();
            (Tensor::from_slice(rt, shape, &v).unwrap(), v.iter().map(|x| x.to_f64()).collect())
        }
        other => panic!("upload of {other} not supported in tests"),
    }
}

/// A tensor of NaN, so that any element a kernel fails to write shows up.
pub fn poisoned(rt: &Runtime, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::full(rt, shape, dtype, f32::NAN).unwrap()
}

/// Relative tolerance per dtype for element-wise results.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-2,
        _ => 1e-5,
    }
}

/// Asserts |got - want| <= tol * max(1, |want|) element by element, with a useful message.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * w.abs().max(1.0)
        };
        assert!(ok, "{what}: element {i} is {g}, expected {w} (tolerance {tol})");
    }
}
