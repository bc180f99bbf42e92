//! Every WGSL kernel in the crate parses, validates and translates to Metal (MSL) with naga,
//! in every variant (dtype × parameter mode × reduction flavour). New `.wgsl` files are picked
//! up by walking the kernel folder. Shared pieces are appended as the `Kernel` statics do
//! (`concat!`): a folder's `common.wgsl` to each of its kernels, `NAME_common.wgsl` to each
//! kernel whose file name starts with `NAME`, and the pieces of another folder in [`ACROSS`];
//! a kernel with alternative pieces ([`ALTERNATIVES`]) is checked once with each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use metallic::{DType, ParamMode, ShaderVariant, compose_source};

fn wgsl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // `prelude/` holds the pieces `compose_source` adds to every kernel, not kernels.
        if path.is_dir() && !path.ends_with("prelude") {
            wgsl_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "wgsl") && !is_shared(&path) {
            out.push(path);
        }
    }
}

/// A shared piece (`common.wgsl`, `NAME_common.wgsl`, an alternative), not a kernel.
fn is_shared(path: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("common.wgsl"))
        || ALTERNATIVES.iter().flat_map(|(_, pieces)| pieces.iter()).any(|piece| path == root.join(piece))
}

/// Kernels that take one of several pieces (kernel, pieces; under `src/kernels`), as their
/// `Kernel` statics do: each piece is one variant of the kernel.
const ALTERNATIVES: &[(&str, &[&str])] = &[
    ("sdpa/decode.wgsl", &["sdpa/decode_scalar.wgsl", "sdpa/decode_vec.wgsl"]),
    ("sdpa/decode_short.wgsl", &["sdpa/decode_scalar.wgsl", "sdpa/decode_vec.wgsl"]),
];

/// Shared pieces a kernel takes from another folder (kernel, piece; under `src/kernels`), as
/// its `Kernel` static appends them.
const ACROSS: &[(&str, &str)] = &[
    ("qmatmul/gemv.wgsl", "unary/unary_common.wgsl"),
    ("qmatmul/gemv.wgsl", "qmatmul/gemv_x_common.wgsl"),
    ("qmatmul/gemv_sb.wgsl", "unary/unary_common.wgsl"),
    ("qmatmul/gemv_sb.wgsl", "qmatmul/gemv_x_common.wgsl"),
    ("qmatmul/gemv_sb.wgsl", "qmatmul/gemv_units_common.wgsl"),
    ("qmatmul/gemv_q8.wgsl", "qmatmul/gemv_units_common.wgsl"),
];

/// The shared pieces that go with kernel file `file`, concatenated.
fn shared_pieces(file: &Path) -> String {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap();
    let mut pieces: Vec<PathBuf> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_shared(p))
        .filter(|p| {
            let shared = p.file_name().and_then(|n| n.to_str()).unwrap();
            let prefix = shared.trim_end_matches("common.wgsl").trim_end_matches('_');
            name.starts_with(prefix)
        })
        .collect();
    pieces.sort();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    pieces.extend(ACROSS.iter().filter(|(kernel, _)| file == root.join(kernel)).map(|(_, piece)| root.join(piece)));
    pieces.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

fn translate(name: &str, text: &str) -> Result<String, String> {
    let module = naga::front::wgsl::parse_str(text).map_err(|e| format!("parse: {}", e.emit_to_string(text)))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("validate: {}", e.emit_to_string(text)))?;
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
        .map_err(|e| format!("overrides: {e}"))?;
    let options = naga::back::msl::Options { lang_version: (2, 4), ..Default::default() };
    let (msl, _) =
        naga::back::msl::write_string(&module, &info, &options, &naga::back::msl::PipelineOptions::default())
            .map_err(|e| format!("msl: {e}"))?;
    if msl.is_empty() {
        return Err(format!("{name}: empty MSL"));
    }
    Ok(msl)
}

#[test]
fn every_kernel_translates_to_msl_in_every_variant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    let mut files = Vec::new();
    wgsl_files(&root, &mut files);
    files.sort();
    assert!(files.len() >= 4, "expected the kernel library under {}, found {files:?}", root.display());
    let mut failures = Vec::new();
    let sources = files.iter().flat_map(|file| {
        let mut source = std::fs::read_to_string(file).unwrap();
        source.push_str(&shared_pieces(file));
        let pieces = ALTERNATIVES.iter().find(|(kernel, _)| *file == root.join(kernel)).map(|(_, p)| *p);
        match pieces {
            None => vec![(file.clone(), source)],
            Some(pieces) => pieces
                .iter()
                .map(|piece| {
                    (root.join(piece), format!("{source}{}", std::fs::read_to_string(root.join(piece)).unwrap()))
                })
                .collect(),
        }
    });
    for (file, source) in sources {
        // f16 key/value caches under f32 queries: the one mix of `T` and `KV` the ops bind.
        for (dtype, kv) in
            [(DType::F32, DType::F32), (DType::F16, DType::F16), (DType::U32, DType::U32), (DType::F32, DType::F16)]
        {
            for (params, subgroups) in [
                (ParamMode::Immediates, true),
                (ParamMode::Uniform, false),
                (ParamMode::Immediates, false),
                (ParamMode::Uniform, true),
            ] {
                let variant = ShaderVariant { dtype, kv, params, subgroups };
                let text = compose_source(&source, variant);
                let name = format!("{} [{variant:?}]", file.strip_prefix(&root).unwrap().display());
                match translate(&name, &text) {
                    Ok(msl) => assert!(msl.contains("kernel void"), "{name}: no kernel entry point in MSL"),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "kernels failing naga:\n{}", failures.join("\n"));
}

#[test]
fn a_broken_kernel_fails_the_check() {
    let variant = ShaderVariant { dtype: DType::F32, kv: DType::F32, params: ParamMode::Immediates, subgroups: false };
    let text =
        compose_source("struct Params { n: u32 }\n@compute @workgroup_size(WG) fn main() { let x = nope; }", variant);
    assert!(translate("broken", &text).is_err());
}
