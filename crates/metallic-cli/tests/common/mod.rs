//! Shared by the CLI tests: where the Gemma model lives, and running the binary.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The `metallic` binary with `args`, every standard stream piped.
pub fn piped(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metallic"));
    cmd.args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `metallic args` with `input` on its standard input.
pub fn with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = piped(args).spawn().unwrap();
    // A run that fails before reading its input (a bad `--output`) may have closed stdin.
    if let Err(e) = child.stdin.take().unwrap().write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// Gemma 3 270M Q4_K_M, fetched by `scripts/fetch-gemma.sh` (which `scripts/test.sh` runs), or
/// `METALLIC_GEMMA` / `METALLIC_MODELS`.
pub fn gemma() -> PathBuf {
    let root = std::env::var_os("METALLIC_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models")
    });
    let path =
        std::env::var_os("METALLIC_GEMMA").map(PathBuf::from).unwrap_or_else(|| root.join("gemma3-270m-q4_k_m.gguf"));
    assert!(path.exists(), "run ./scripts/fetch-gemma.sh first ({} missing)", path.display());
    path
}
