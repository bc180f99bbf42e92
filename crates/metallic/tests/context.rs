//! Context: adapter choice, capabilities, builder errors, device-level failures.
//!
//! Every test here creates devices of its own, so each holds `common::serial()`: NVIDIA's
//! Vulkan driver (580) has been seen to deadlock when one thread destroys a device while
//! another submits to a different one (see docs/ARCHITECTURE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{fresh_context, runtime, serial};
use metallic::kernels::elementwise::{Binary, BinaryOp};
use metallic::{CommandBuffer, Context, DType, Error, ParamMode, Tensor, wgpu};

#[test]
fn picks_an_adapter_and_reports_what_it_got() {
    let _serial = serial();
    let rt = common::runtime();
    let ctx = rt.context();
    let caps = ctx.caps();
    assert!(!ctx.adapter_info().name.is_empty());
    assert!(caps.storage_alignment() >= 4);
    assert!(caps.limits.max_compute_workgroups_per_dimension >= 65_535);
    // What the capability helpers say is what the device has.
    assert_eq!(caps.subgroups(), ctx.device().features().contains(wgpu::Features::SUBGROUP));
    assert_eq!(caps.shader_f16(), ctx.device().features().contains(wgpu::Features::SHADER_F16));
    assert_eq!(caps.features, ctx.device().features());
    if caps.params == ParamMode::Immediates {
        assert!(caps.features.contains(wgpu::Features::IMMEDIATES));
    }
    assert!(format!("{ctx:?}").contains(&ctx.adapter_info().name));
    assert!(!metallic::adapters(wgpu::Backends::all()).is_empty());
}

#[test]
fn adapters_can_be_chosen_by_index_or_name() {
    let _serial = serial();
    let listed = metallic::adapters(wgpu::Backends::PRIMARY);
    let first = listed.first().expect("at least one adapter");
    let by_index = Context::builder().adapter("0").build().unwrap();
    assert_eq!(by_index.adapter_info().name, first.name);
    let part: String = first.name.chars().take(4).collect::<String>().to_uppercase();
    let by_name = Context::builder().adapter(part).build().unwrap();
    assert_eq!(by_name.adapter_info().name, first.name);
}

#[test]
fn unknown_adapters_are_errors_that_list_the_choices() {
    let _serial = serial();
    let err = Context::builder().adapter("no-such-gpu-9000").build().unwrap_err();
    match &err {
        Error::NoAdapter { requested, hint } => {
            assert_eq!(requested.as_deref(), Some("no-such-gpu-9000"));
            let first = &metallic::adapters(wgpu::Backends::PRIMARY)[0].name;
            assert!(hint.contains(first.as_str()), "{hint}");
        }
        other => panic!("expected NoAdapter, got {other}"),
    }
    assert!(matches!(Context::builder().adapter("999").build(), Err(Error::NoAdapter { .. })));
    let none = Context::builder().backends(wgpu::Backends::empty()).build().unwrap_err();
    assert!(none.to_string().contains("mesa-vulkan-drivers"), "{none}");
}

#[test]
fn features_can_be_turned_off() {
    let _serial = serial();
    let ctx = Context::builder()
        .disable(wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16 | wgpu::Features::IMMEDIATES)
        .experimental(false)
        .build()
        .unwrap();
    let caps = ctx.caps();
    assert!(!caps.subgroups() && !caps.shader_f16() && !caps.cooperative_matrix());
    let untimed = Context::builder().disable(wgpu::Features::TIMESTAMP_QUERY).build().unwrap();
    let err =
        CommandBuffer::new(&untimed, &metallic::ResourceCache::new(&untimed)).unwrap().enable_gpu_timing().unwrap_err();
    assert!(matches!(err, Error::Unsupported { feature: "TIMESTAMP_QUERY", .. }), "{err}");
    assert_eq!(caps.params, ParamMode::Uniform);
    // Without immediates, asking for them is an error rather than a silent fallback.
    let err = Context::builder().disable(wgpu::Features::IMMEDIATES).params(ParamMode::Immediates).build().unwrap_err();
    assert!(matches!(err, Error::Unsupported { feature, .. } if feature.contains("IMMEDIATES")), "{err}");
}

#[test]
fn f16_kernels_without_shader_f16_are_unsupported_errors() {
    let _serial = serial();
    let ctx = Context::builder().disable(wgpu::Features::SHADER_F16).build().unwrap();
    let rt = metallic::Runtime::with_context(&ctx).unwrap();
    // Host I/O of f16 needs no shader support...
    let t = metallic::Tensor::from_slice(&rt, [2], &[metallic::f16::ONE, metallic::f16::ONE]).unwrap();
    assert_eq!(t.to_vec_f32().unwrap(), [1.0, 1.0]);
    // ...kernels do.
    let err = (&t + 1.0).unwrap_err();
    assert!(matches!(err, Error::Unsupported { feature: "SHADER_F16", .. }), "{err}");
    assert!(err.to_string().contains("SHADER_F16"), "{err}");
}

#[test]
fn engine_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Context>();
    check::<metallic::Runtime>();
    check::<metallic::Tensor>();
    check::<metallic::ResourceCache>();
    check::<metallic::MemoryPool>();
    check::<metallic::Graph>();
    fn check_send<T: Send>() {}
    check_send::<metallic::CommandBuffer>();
}

#[test]
fn gpu_validation_errors_surface_as_errors_at_the_next_submission() {
    let _serial = serial();
    // A device of its own: the error would otherwise surface in another test's submission.
    let rt = metallic::Runtime::with_context(&fresh_context(None)).unwrap();
    // A raw wgpu misuse outside any error scope: an unaligned mapped-at-creation buffer.
    let _bad = rt.context().device().create_buffer(&metallic::wgpu::BufferDescriptor {
        label: Some("deliberately invalid"),
        size: 3,
        usage: metallic::wgpu::BufferUsages::MAP_WRITE,
        mapped_at_creation: true,
    });
    let err = rt.synchronize().unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    // Reported once; the device keeps working.
    rt.synchronize().unwrap();
    assert_eq!(Tensor::ones(&rt, [3], DType::F32).unwrap().to_vec::<f32>().unwrap(), [1.0; 3]);
}

#[test]
fn a_lost_device_is_reported() {
    let _serial = serial();
    let rt = metallic::Runtime::with_context(&fresh_context(None)).unwrap();
    let t = Tensor::ones(&rt, [3], DType::F32).unwrap();
    rt.synchronize().unwrap();
    rt.context().device().destroy();
    let _ = rt.context().device().poll(metallic::wgpu::PollType::Poll);
    let err = (&t + 1.0).and_then(|x| x.to_vec::<f32>()).unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err}");
}

#[test]
fn command_buffers_and_caches_must_share_a_device() {
    let _serial = serial();
    let a = runtime();
    let b = metallic::Runtime::with_context(&fresh_context(None)).unwrap();
    let err = CommandBuffer::new(a.context(), b.cache()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "CommandBuffer::new", .. }), "{err}");
    let t = Tensor::zeros(&b, [2], DType::F32).unwrap();
    let mut cb = a.command_buffer().unwrap();
    let err = cb.record(&Binary::scalar(BinaryOp::Add, &t, 1.0, &t).unwrap()).unwrap_err();
    assert!(err.to_string().contains("another device"), "{err}");
}
