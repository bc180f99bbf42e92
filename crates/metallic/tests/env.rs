//! The METALLIC_* environment overrides. One test in its own process: the environment is global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use metallic::{Context, Error, ParamMode};

fn with_var<T>(name: &str, value: &str, f: impl FnOnce() -> T) -> T {
    // SAFETY: `set_var` races with concurrent readers of the environment; this test binary
    // holds a single test, so no other thread reads it meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(name, value)
    };
    let out = f();
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe {
        std::env::remove_var(name)
    };
    out
}

#[test]
fn environment_overrides_are_read_and_checked() {
    let ctx = with_var("METALLIC_PARAMS", "uniform", Context::new).unwrap();
    assert_eq!(ctx.caps().params, ParamMode::Uniform);
    let ctx = with_var("METALLIC_DISABLE", "subgroup, f16", Context::new).unwrap();
    assert!(!ctx.caps().subgroups() && !ctx.caps().shader_f16());
    let ctx = with_var("METALLIC_ADAPTER", "0", Context::new).unwrap();
    assert_eq!(ctx.adapter_info().name, metallic::adapters(metallic::wgpu::Backends::PRIMARY)[0].name);

    let bad = with_var("METALLIC_PARAMS", "carrier-pigeon", Context::new).unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument { op: "METALLIC_PARAMS", .. }), "{bad}");
    let bad = with_var("METALLIC_DISABLE", "warp-drive", Context::new).unwrap_err();
    assert!(bad.to_string().contains("warp-drive"), "{bad}");
    let bad = with_var("METALLIC_BACKEND", "abacus", Context::new).unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument { op: "METALLIC_BACKEND", .. }), "{bad}");
    let none = with_var("METALLIC_ADAPTER", "no-such-gpu", Context::new).unwrap_err();
    assert!(matches!(none, Error::NoAdapter { .. }), "{none}");
}
