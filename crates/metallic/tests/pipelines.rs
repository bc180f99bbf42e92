//! Saved pipeline lists (`metallic::pipelines`): keys survive a round trip through their text
//! lines; a list saved by one runtime makes a fresh runtime build every pipeline the same ops
//! need before they run (recording them then builds nothing); damaged or foreign lines are
//! skipped, a missing list precompiles nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::{PipelineKey, Runtime, Tensor, pipelines};

/// A few ops of different kernels, recorded and run on `rt`.
fn run_ops(rt: &Runtime) {
    let x = Tensor::from_slice(rt, [3, 64], &(0..192).map(|i| (i % 17) as f32 * 0.25).collect::<Vec<_>>()).unwrap();
    let w = Tensor::from_slice(rt, [64, 5], &(0..320).map(|i| (i % 7) as f32 * 0.125).collect::<Vec<_>>()).unwrap();
    let y = x.softmax().unwrap().rms_norm(None, 1e-6, false).unwrap().matmul(&w).unwrap().exp().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap().len(), 15);
}

/// Points the lists at a fresh folder (the whole test binary shares it: every test uses its
/// own scope). Every test calls it first, before it creates a device, so the environment is
/// written before anything in this process reads it (`OnceLock` makes the others wait).
fn cache_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("metallic-pipelines-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: set once, before any thread of this binary reads the environment (see above).
        unsafe { std::env::set_var("METALLIC_CACHE_DIR", &dir) };
        dir
    })
    .clone()
}

#[test]
fn keys_survive_their_text_lines() {
    cache_dir();
    let rt = runtime();
    run_ops(&rt);
    let keys = rt.cache().pipeline_keys();
    assert!(keys.len() >= 4, "{keys:?}");
    for key in &keys {
        let line = key.to_line();
        assert_eq!(PipelineKey::from_line(&line, metallic::kernels::ALL), Some(*key), "{line}");
    }
    // Damaged lines name nothing.
    let line = keys[0].to_line();
    let words: Vec<&str> = line.split(' ').collect();
    for bad in [
        String::new(),
        "no_such_kernel 0000000000000000 f32 f32 uniform false".to_string(),
        // The right name under another source (a list written by another build).
        format!("{} 0123456789abcdef {}", words[0], words[2..].join(" ")),
        line.replace("f32", "f64"),
        format!("{line} WG=zz"),
        format!("{line} 9bad=0000000000000000"),
        // Cut inside its last word: an override's value (`WG=4040` of `WG=4040000000000000`,
        // which once parsed as another value) or the subgroups flag.
        line[..line.len() - 3].to_string(),
        // A value of other than 16 hex digits.
        format!("{line} WG=40"),
        format!("{line} WG=+040000000000000"),
    ] {
        assert_eq!(PipelineKey::from_line(&bad, metallic::kernels::ALL), None, "{bad:?}");
    }
}

#[test]
fn a_saved_list_builds_a_fresh_runtimes_pipelines_before_use() {
    cache_dir();
    let scope = "saved-list";
    let first = runtime();
    run_ops(&first);
    let saved = pipelines::save(&first, scope).unwrap();
    assert_eq!(saved, first.cache().pipeline_keys().len());
    assert!(pipelines::list_path(&first, scope).unwrap().is_file());
    // Saving again adds nothing new: the list holds each key once.
    assert_eq!(pipelines::save(&first, scope).unwrap(), saved);

    let fresh = runtime();
    assert_eq!(fresh.cache().stats().misses, 0);
    let built = pipelines::precompile_saved(&fresh, scope).join();
    assert_eq!(built, saved, "every pipeline of the list built");
    let before = fresh.cache().stats();
    run_ops(&fresh);
    let after = fresh.cache().stats();
    let new_pipelines = fresh.cache().pipeline_keys().len() - saved;
    assert_eq!(new_pipelines, 0, "the ops built no pipeline of their own ({before:?} -> {after:?})");
    // Another scope's list is another file: nothing to build.
    assert_eq!(pipelines::precompile_saved(&runtime(), "another-scope").join(), 0);
}

#[test]
fn damaged_lists_are_skipped_line_by_line() {
    cache_dir();
    let scope = "damaged";
    let rt = runtime();
    run_ops(&rt);
    let good = rt.cache().pipeline_keys()[0].to_line();
    let path = pipelines::list_path(&rt, scope).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = b"\xff\xfe garbage\n\n".to_vec();
    bytes.extend_from_slice(format!("{good}\nnot a key\n{}\n", "x".repeat(100_000)).as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let loaded = pipelines::load(&rt, scope);
    assert_eq!(loaded.len(), 1, "only the good line: {loaded:?}");
    let fresh = runtime();
    assert_eq!(pipelines::precompile_saved(&fresh, scope).join(), 1);
    // Saving rewrites the list with good lines only.
    pipelines::save(&rt, scope).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().all(|l| PipelineKey::from_line(l, metallic::kernels::ALL).is_some()), "{text}");
    // No list at all: nothing to build, no error.
    std::fs::remove_file(&path).unwrap();
    assert!(pipelines::load(&rt, scope).is_empty());
}
