//! Every variant of `metallic::Error`, produced by a real trigger where this machine allows
//! one, with the message a user sees checked (the op or field, and the values).
//!
//! Where each variant is produced (file: test):
//!
//! | variant | produced by |
//! |---|---|
//! | `NoAdapter` | errors.rs: `an_unknown_adapter_names_the_request_and_the_choices`; context.rs: `unknown_adapters_are_errors_that_list_the_choices`; env.rs |
//! | `DeviceRequest` | errors.rs: `unreachable_variants_read_well` (constructed: see there why) |
//! | `ShaderCompilation` | errors.rs: `a_broken_kernel_names_itself_and_the_compiler_message`; cache.rs: `shader_errors_name_the_kernel_and_carry_the_compiler_message` |
//! | `BufferAllocation` | errors.rs: `huge_tensors_are_errors_not_panics`, `a_tensor_beyond_one_storage_binding_is_an_error`; pool.rs: `requests_beyond_the_device_limit_are_errors` |
//! | `OutOfMemory` | errors.rs: `unreachable_variants_read_well` (constructed: see there why) |
//! | `InvalidShape` | errors.rs: `shape_errors_name_the_op_and_the_shapes`; many op tests (norm.rs, sdpa.rs, ...) |
//! | `ShapeMismatch` | errors.rs: `shape_errors_name_the_op_and_the_shapes`; command.rs, matmul.rs, ... |
//! | `DTypeMismatch` | errors.rs: `dtype_and_argument_errors_name_the_op_and_the_values`; elementwise.rs, matmul.rs, ... |
//! | `InvalidArgument` | errors.rs: `dtype_and_argument_errors_name_the_op_and_the_values`; env.rs, unary.rs, matmul.rs, ... |
//! | `Unsupported` | errors.rs: `immediates_without_the_feature_are_unsupported`; context.rs: `f16_kernels_without_shader_f16_are_unsupported_errors`, `features_can_be_turned_off` |
//! | `ResourceNotCached` | errors.rs: `a_cache_miss_names_the_key`; cache.rs: `get_cached_never_compiles` |
//! | `PoolExhausted` | errors.rs: `an_exhausted_pool_gives_every_count`; pool.rs: `growth_policy_and_limits`, `a_fixed_pool_backs_a_runtime` |
//! | `DeviceLost` | errors.rs: `a_destroyed_device_is_reported_as_lost`, `a_read_under_way_on_a_destroyed_device_is_a_lost_device`; context.rs: `a_lost_device_is_reported` |
//! | `BufferMap` | errors.rs: `unreachable_variants_read_well` (constructed: see there why) |
//! | `Validation` | errors.rs: `a_mapped_buffer_in_a_dispatch_is_a_validation_error`; context.rs: `gpu_validation_errors_surface_as_errors_at_the_next_submission` |
//! | `Io` | errors.rs: `unreachable_variants_read_well` (constructed: no code in `metallic` produces it) |
//!
//! Three tests at the end came from bugs found while writing this file: an overflowing size in
//! `Tensor::from_existing_buffer` and a lost device first reported as a validation error (both
//! fixed), and a buffer of another device, which still panics inside wgpu-core when bound
//! (`#[ignore]`d: every `Context` has its own wgpu instance, and wgpu cannot tell a foreign
//! buffer's device apart; `from_existing_buffer` documents that the buffer must come from the
//! runtime's device).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::sdpa::{SdpaImpl, SdpaOptions, scaled_dot_product_attention_with};
use metallic::{
    ComputeKernel, Context, DType, Error, Kernel, MemoryPool, Overrides, ParamMode, PipelineKey, PoolConfig,
    ResourceCache, Runtime, ShaderVariant, Tensor, wgpu,
};

/// A storage buffer of `bytes` on `rt`'s device, outside the pool.
fn raw_buffer(rt: &Runtime, bytes: u64, mapped_at_creation: bool, label: &str) -> wgpu::Buffer {
    rt.context().device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation,
    })
}

/// The runtime still computes after an error.
fn still_works(rt: &Runtime) {
    assert_eq!(Tensor::ones(rt, [3], DType::F32).unwrap().to_vec::<f32>().unwrap(), [1.0; 3]);
}

#[test]
fn an_unknown_adapter_names_the_request_and_the_choices() {
    let _serial = serial();
    // No device is created: the selector matches nothing.
    let err = Context::builder().adapter("no-such-gpu-errors-rs").build().unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err:?}");
    let first = &metallic::adapters(wgpu::Backends::PRIMARY)[0].name;
    let msg = err.to_string();
    assert!(msg.starts_with("no GPU adapter found matching \"no-such-gpu-errors-rs\": "), "{msg}");
    assert!(msg.contains("adapter(s) found") && msg.contains(first.as_str()), "{msg}");

    // No backend at all: the hint says what to install.
    let err = Context::builder().backends(wgpu::Backends::empty()).build().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoAdapter { requested: None, .. }), "{err:?}");
    assert!(msg.starts_with("no GPU adapter found: install a Vulkan driver"), "{msg}");
}

static BROKEN: Kernel = Kernel {
    name: "errors_rs_broken",
    source: "struct Params { n: u32 }\n@compute @workgroup_size(1) fn main() { let x: u32 = no_such_identifier; }",
    entry: "main",
    bindings: 0,
};

#[test]
fn a_broken_kernel_names_itself_and_the_compiler_message() {
    let _serial = serial();
    let rt = runtime();
    let variant =
        ShaderVariant { dtype: DType::F32, kv: DType::F32, params: rt.context().caps().params, subgroups: false };
    let key = PipelineKey { kernel: &BROKEN, variant, overrides: Overrides::default() };
    let err = rt.cache().get::<ComputeKernel>(&key).unwrap_err();
    assert!(matches!(&err, Error::ShaderCompilation { kernel, .. } if kernel == "errors_rs_broken"), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("shader compilation failed for kernel `errors_rs_broken`: "), "{msg}");
    assert!(msg.contains("no_such_identifier"), "the compiler's message is lost: {msg}");
    still_works(&rt);
}

#[test]
fn huge_tensors_are_errors_not_panics() {
    let _serial = serial();
    let rt = runtime();
    let max = rt.context().caps().limits.max_buffer_size;
    let align = rt.pool().alignment();
    let used = rt.pool().stats().used_bytes;
    // Sizes follow the adapter's limit (lavapipe: 2 GiB - 1; wgpu caps every adapter at 2^52).
    let just_over = usize::try_from(max / 4 + 1).unwrap();

    // One f32 past max_buffer_size.
    let err = Tensor::empty(&rt, [just_over], DType::F32).unwrap_err();
    let requested = (just_over as u64 * 4).next_multiple_of(align);
    assert!(matches!(err, Error::BufferAllocation { what: "max_buffer_size", .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("buffer allocation of {requested} bytes exceeds the device limit of {max} bytes (max_buffer_size)")
    );
    // Absurdly past it: half the address space.
    let err = Tensor::zeros(&rt, [usize::MAX / 8], DType::F32).unwrap_err();
    assert!(matches!(err, Error::BufferAllocation { limit, .. } if limit == max), "{err:?}");

    // An element count that overflows usize is a shape error, before any allocation.
    let err = Tensor::zeros(&rt, [usize::MAX, 2], DType::F32).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "Shape::new", .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("invalid shape for Shape::new: element count of [{}, 2] overflows", usize::MAX)
    );
    // In bytes only: elements fit usize, bytes do not.
    let err = Tensor::empty(&rt, [usize::MAX / 2], DType::F32).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "Tensor::empty", .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("[{}] of f32 overflows", usize::MAX / 2)), "{err}");

    // Ops whose outputs would be huge fail when allocating them: an outer product of two
    // small vectors, and the composite attention's [1, 1, side, side] score matrix.
    let side = (max as f64 / 4.0).sqrt() as usize + 2;
    let column = Tensor::empty(&rt, [side, 1], DType::F32).unwrap();
    let row = Tensor::empty(&rt, [1, side], DType::F32).unwrap();
    let err = column.matmul(&row).unwrap_err();
    let product = (side as u64 * side as u64 * 4).next_multiple_of(align);
    assert!(matches!(err, Error::BufferAllocation { requested, .. } if requested == product), "{err:?}");
    let q = Tensor::empty(&rt, [1, 1, side, 4], DType::F32).unwrap();
    let err = scaled_dot_product_attention_with(&q, &q, &q, SdpaOptions::default(), SdpaImpl::Composite).unwrap_err();
    assert!(matches!(err, Error::BufferAllocation { requested, .. } if requested == product), "{err:?}");
    drop((column, row, q));

    // Nothing leaked, nothing broke.
    assert_eq!(rt.pool().stats().used_bytes, used);
    still_works(&rt);
}

#[test]
fn a_tensor_beyond_one_storage_binding_is_an_error() {
    let _serial = serial();
    let rt = runtime();
    let limits = &rt.context().caps().limits;
    let (binding, max) = (limits.max_storage_buffer_binding_size, limits.max_buffer_size);
    let elements = usize::try_from(binding / 4 + 8).unwrap();
    if binding + 32 > max {
        // Such a tensor cannot even be allocated here: the pool refuses it first.
        let err = Tensor::zeros(&rt, [elements], DType::F32).unwrap_err();
        assert!(matches!(err, Error::BufferAllocation { what: "max_buffer_size", .. }), "{err:?}");
        return;
    }
    // Allocating it works (the pool's limit is the buffer size); binding it to a kernel does not.
    let t = Tensor::empty(&rt, [elements], DType::F32).unwrap();
    let err = t.fill(0.0).unwrap_err();
    match &err {
        Error::BufferAllocation { requested, limit, what: "max_storage_buffer_binding_size" } => {
            assert_eq!(*limit, binding);
            assert!(*requested >= binding + 32, "{err}");
            assert_eq!(
                err.to_string(),
                format!(
                    "buffer allocation of {requested} bytes exceeds the device limit of {binding} bytes \
                     (max_storage_buffer_binding_size)"
                )
            );
        }
        other => panic!("expected a binding-size BufferAllocation, got {other:?}"),
    }
    drop(t);
    still_works(&rt);
}

#[test]
fn shape_errors_name_the_op_and_the_shapes() {
    let _serial = serial();
    let rt = runtime();
    let a = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    let b = Tensor::zeros(&rt, [4, 5], DType::F32).unwrap();
    let err = a.matmul(&b).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { op: "matmul", lhs, rhs } if lhs == &[2, 3] && rhs == &[4, 5]));
    assert_eq!(err.to_string(), "shape mismatch in matmul: [2, 3] vs [4, 5]");

    let err = a.reshape([7]).unwrap_err();
    assert_eq!(err.to_string(), "shape mismatch in reshape: [2, 3] vs [7]");

    let err = Tensor::zeros(&rt, [1; 9], DType::F32).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "Shape::new", .. }), "{err:?}");
    assert_eq!(err.to_string(), "invalid shape for Shape::new: 9 dimensions given, at most 8 supported");
}

#[test]
fn dtype_and_argument_errors_name_the_op_and_the_values() {
    let _serial = serial();
    let rt = runtime();
    let t = Tensor::zeros(&rt, [4], DType::F32).unwrap();
    let err = t.to_vec::<u32>().unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "Tensor::to_vec", expected: DType::F32, got: DType::U32 }));
    assert_eq!(err.to_string(), "dtype mismatch in Tensor::to_vec: expected f32, got u32");
    let err = t.write(&[1u32, 2, 3, 4]).unwrap_err();
    assert_eq!(err.to_string(), "dtype mismatch in Tensor::write: expected f32, got u32");

    let err = Tensor::arange(&rt, 0.0, 1.0, 0.0, DType::F32).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "Tensor::arange", .. }), "{err:?}");
    assert_eq!(err.to_string(), "invalid argument to Tensor::arange: no sequence from 0 to 1 by 0");
    let err = t.write(&[1.0f32; 3]).unwrap_err();
    assert_eq!(err.to_string(), "invalid argument to Tensor::write: 3 values for shape [4]");
    let err = t.narrow(3, 2).unwrap_err();
    assert_eq!(err.to_string(), "invalid argument to narrow: rows 3..5 of shape [4]");
    still_works(&rt);
}

#[test]
fn immediates_without_the_feature_are_unsupported() {
    let _serial = serial();
    // Refused before any device is created.
    let err = Context::builder().disable(wgpu::Features::IMMEDIATES).params(ParamMode::Immediates).build().unwrap_err();
    let adapter = &metallic::adapters(wgpu::Backends::PRIMARY)[0].name;
    assert!(matches!(err, Error::Unsupported { op: "Context", .. }), "{err:?}");
    // The first adapter is the one chosen when there is one; name-check only then.
    if metallic::adapters(wgpu::Backends::PRIMARY).len() == 1 {
        assert_eq!(
            err.to_string(),
            format!("Context needs IMMEDIATES (128 bytes), which this adapter ({adapter}) does not offer")
        );
    } else {
        assert!(err.to_string().starts_with("Context needs IMMEDIATES (128 bytes), which this adapter ("), "{err}");
    }
}

#[test]
fn a_cache_miss_names_the_key() {
    let _serial = serial();
    let rt = runtime();
    let cache = ResourceCache::new(rt.context());
    let variant =
        ShaderVariant { dtype: DType::F32, kv: DType::F32, params: rt.context().caps().params, subgroups: false };
    let key = PipelineKey { kernel: &BROKEN, variant, overrides: Overrides::new(&[("WG", 64.0)]).unwrap() };
    let err = cache.get_cached::<ComputeKernel>(&key).unwrap_err();
    assert!(matches!(err, Error::ResourceNotCached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("resource not cached: "), "{msg}");
    assert!(msg.contains("errors_rs_broken") && msg.contains("WG"), "the key is not named: {msg}");
}

#[test]
fn an_exhausted_pool_gives_every_count() {
    let _serial = serial();
    let ctx = context();
    let pool = MemoryPool::new(&ctx, PoolConfig { chunk_bytes: 4096, limit_bytes: 4096, grow: true });
    let _all = pool.alloc(4096).unwrap();
    let err = pool.alloc(1).unwrap_err();
    let align = pool.alignment();
    assert!(
        matches!(err, Error::PoolExhausted { requested, used: 4096, reserved: 4096, limit: 4096 } if requested == align)
    );
    assert_eq!(
        err.to_string(),
        format!("memory pool exhausted: requested {align} bytes, 4096 of 4096 bytes in use, limit 4096 bytes")
    );
}

#[test]
fn a_destroyed_device_is_reported_as_lost() {
    let _serial = serial();
    let rt = Runtime::with_context(&fresh_context(None)).unwrap();
    let t = Tensor::ones(&rt, [3], DType::F32).unwrap();
    rt.synchronize().unwrap();
    rt.context().device().destroy();
    // wgpu loses a destroyed device at its next poll (see the ignored test below for what a
    // wait without one reports).
    let _ = rt.context().device().poll(wgpu::PollType::Poll);
    let err = (&t * 2.0).and_then(|x| x.to_vec::<f32>()).unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err:?}");
    // The reason is wgpu's `DeviceLostReason` and the driver's text.
    assert!(err.to_string().starts_with("GPU device lost: Destroyed"), "{err}");
    // It stays lost: every later call says so rather than hanging or panicking.
    let again = Tensor::ones(&rt, [3], DType::F32).and_then(|x| x.to_vec::<f32>()).unwrap_err();
    assert!(matches!(again, Error::DeviceLost { .. }), "{again:?}");
}

/// Why `BufferMap` is out of reach: every read maps its staging buffer only after waiting for
/// the copy (`PendingRead::wait` → `Context::wait_for`), and that wait reports a destroyed
/// device or a GPU error first. Destroying the device between `start_read` and `wait` (the
/// one window where a map could fail) gives `DeviceLost`, not `BufferMap`.
#[test]
fn a_read_under_way_on_a_destroyed_device_is_a_lost_device() {
    let _serial = serial();
    let rt = Runtime::with_context(&fresh_context(None)).unwrap();
    let t = Tensor::ones(&rt, [3], DType::F32).unwrap();
    rt.synchronize().unwrap();
    let read = rt.start_read(&[&t]).unwrap();
    rt.context().device().destroy();
    let err = read.wait().unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err:?}");
    assert!(err.to_string().starts_with("GPU device lost: "), "{err}");
}

#[test]
fn a_mapped_buffer_in_a_dispatch_is_a_validation_error() {
    let _serial = serial();
    // A device of its own: the error surfaces at the next submission on the device.
    let rt = Runtime::with_context(&fresh_context(None)).unwrap();
    // A caller's buffer, still mapped, wrapped as a tensor and written by a kernel.
    let buffer = raw_buffer(&rt, 64, true, "errors-rs-still-mapped");
    let t = Tensor::from_existing_buffer(&rt, buffer, 0, [16], DType::F32).unwrap();
    t.fill(1.0).unwrap();
    let err = rt.synchronize().unwrap_err();
    match &err {
        Error::Validation { context, message } => {
            assert!(context.starts_with("submitting"), "{err}");
            assert!(message.contains("errors-rs-still-mapped") && message.contains("still mapped"), "{err}");
        }
        other => panic!("expected Validation, got {other:?}"),
    }
    assert!(err.to_string().starts_with("GPU validation error during submitting"), "{err}");
    // Reported once; the device keeps working.
    rt.synchronize().unwrap();
    still_works(&rt);
}

/// Variants no input can produce on this machine, constructed by hand so that their text is
/// still checked:
///
/// - `DeviceRequest`: `ContextBuilder::build` asks for exactly the features and limits the
///   chosen adapter reports, which a working driver grants; only a broken driver refuses.
/// - `OutOfMemory`: needs the driver to fail an allocation within `max_buffer_size`. On
///   lavapipe device memory is host memory with overcommit (a 2 GiB buffer succeeds lazily),
///   and exhausting it would take the memory of every process on the machine.
/// - `BufferMap`: see `a_read_under_way_on_a_destroyed_device_is_a_lost_device`.
/// - `Io`: no code in `metallic` touches files; the variant exists for `?` on
///   `std::io::Error` in callers (`From<std::io::Error>`), which is what this checks.
#[test]
fn unreachable_variants_read_well() {
    let err = Error::DeviceRequest { adapter: "llvmpipe".into(), message: "Limits exceeded".into() };
    assert_eq!(err.to_string(), "device request failed on llvmpipe: Limits exceeded");

    let err = Error::OutOfMemory { context: "allocating a 4096-byte pool chunk".into() };
    assert_eq!(err.to_string(), "GPU out of memory while allocating a 4096-byte pool chunk");

    let err = Error::BufferMap { message: "the map callback never ran".into() };
    assert_eq!(err.to_string(), "buffer map failed: the map callback never ran");

    fn read(path: &str) -> metallic::Result<Vec<u8>> {
        Ok(std::fs::read(path)?)
    }
    let err = read("/nonexistent/metallic-errors-rs").unwrap_err();
    assert!(matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound), "{err:?}");
    assert!(err.to_string().starts_with("I/O error: "), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing this file (not fixed here). Each test states the behaviour due and
// is ignored until the fix lands; run with `--ignored` to see them fail.
// ---------------------------------------------------------------------------------------------

/// `Tensor::from_existing_buffer` computes `shape.numel() * dtype.size_in_bytes()` unchecked
/// (src/tensor/mod.rs, `let bytes = ...`): an element count that fits `usize` but whose bytes
/// do not panics with "attempt to multiply with overflow" in debug builds; in release builds
/// the product wraps, and `[2^62 + 1]` f32 elements pass the bounds check as 4 bytes.
#[test]
fn from_existing_buffer_rejects_byte_sizes_that_overflow() {
    let _serial = serial();
    let rt = runtime();
    let buffer = raw_buffer(&rt, 64, false, "errors-rs-overflow");
    let err = Tensor::from_existing_buffer(&rt, buffer, 0, [(1usize << 62) + 1], DType::F32).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { .. } | Error::InvalidArgument { .. }), "{err:?}");
}

/// `Tensor::from_existing_buffer` accepts a buffer of another device (each `Context` has its own
/// wgpu instance); the first kernel that binds it panics inside wgpu-core ("Cannot get
/// non-existent resource BufferId(..)", from `ResourceCache::bind_group` via
/// `ComputeEncoder::dispatch`) instead of returning an error.
#[test]
#[ignore = "bug: a buffer of another device panics in wgpu-core when bound"]
fn a_buffer_of_another_device_is_an_error() {
    let _serial = serial();
    let rt = runtime();
    let other = Runtime::with_context(&fresh_context(None)).unwrap();
    let buffer = raw_buffer(&other, 64, false, "errors-rs-foreign");
    let result = Tensor::from_existing_buffer(&rt, buffer, 0, [16], DType::F32).and_then(|t| t.fill(1.0));
    assert!(matches!(result, Err(Error::InvalidArgument { .. })), "{result:?}");
}

/// After `device.destroy()` with no poll in between, the next submission is dropped by wgpu
/// (errors of an invalid device reach no error scope) but still returns a submission index;
/// `Context::wait_for` (src/context.rs) then gets `PollError::WrongSubmissionIndex` and maps it
/// to `Error::Validation { context: "waiting for the GPU", message: "Tried to wait using a
/// submission index (2) that has not been returned by a successful submission ..." }`. The
/// device-lost callback only runs inside that poll, so the *next* call says `DeviceLost`: the
/// first error a user sees blames validation for a lost device.
#[test]
fn a_destroyed_device_is_lost_at_the_first_wait() {
    let _serial = serial();
    let rt = Runtime::with_context(&fresh_context(None)).unwrap();
    let t = Tensor::ones(&rt, [3], DType::F32).unwrap();
    rt.synchronize().unwrap();
    rt.context().device().destroy();
    let err = (&t * 2.0).and_then(|x| x.to_vec::<f32>()).unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err:?}");
}
