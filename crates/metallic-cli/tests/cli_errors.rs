//! What a user sees when a request is wrong or the output goes away: one line on stderr and a
//! non-zero exit code (or success where the request is valid) — never a panic or a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metallic"));
    cmd.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).env("RUST_BACKTRACE", "1");
    cmd
}

fn metallic(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// A failure as users should see it: exit code `code`, stderr ending with the one `error: `
/// line, which names `what`; no panic or backtrace, nothing on stdout.
fn assert_clean_failure(out: &Output, code: i32, what: &str, args: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(what), "{args:?}: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", String::from_utf8_lossy(&out.stdout));
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("metallic-cli-errors-{}-{name}", std::process::id()))
}

#[test]
fn wrong_inputs_end_in_one_line() {
    let gemma = common::gemma();
    let model = gemma.to_str().unwrap();
    // The first megabyte of the model: a download cut short.
    let truncated = temp("truncated.gguf");
    let bytes = std::fs::read(&gemma).unwrap();
    std::fs::write(&truncated, &bytes[..1 << 20]).unwrap();
    let dir = std::env::temp_dir();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "--model", dir.to_str().unwrap(), "--prompt", "x"], dir.to_str().unwrap()),
        (vec!["generate", "--model", truncated.to_str().unwrap(), "--prompt", "x"], "truncated.gguf"),
        (vec!["tokenize", "--model", truncated.to_str().unwrap(), "x"], "truncated.gguf"),
        (vec!["generate", "--model", model, "--no-bos", "--prompt", ""], "the prompt has no tokens"),
        (vec!["generate", "--model", model, "--prompt", "x", "--temperature=-1"], "temperature"),
        (vec!["generate", "--model", model, "--prompt", "x", "--top-p", "2"], "top-p"),
        (vec!["generate", "--model", model, "--prompt-file", "/nonexistent/prompt.txt"], "/nonexistent/prompt.txt"),
        (vec!["embed", "--model", dir.to_str().unwrap()], "config.json"),
    ];
    for (args, what) in &cases {
        assert_clean_failure(&metallic(args), 1, what, args);
    }
    std::fs::remove_file(&truncated).unwrap();
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in
        [&["generate", "--bogus"][..], &["generate", "--model"], &["generate", "--max-tokens", "many"], &["nonsense"]]
    {
        let out = metallic(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn valid_edge_requests_succeed() {
    let gemma = common::gemma();
    let model = gemma.to_str().unwrap();
    // No tokens asked for: nothing generated, still a result.
    let out = metallic(&["generate", "--model", model, "--prompt", "Hi", "--max-tokens", "0", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tokens"], serde_json::json!([]));
    assert_eq!(json["prompt_tokens"], serde_json::json!([2, 10979]));
    // An empty prompt is the BOS token alone: llama.cpp's `bos_only` case.
    let out = metallic(&["generate", "--model", model, "--prompt", "", "--max-tokens", "1", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["prompt_tokens"], serde_json::json!([2]));
}

/// Output that goes nowhere (the reader closed the pipe, as `| head -1` does): a one-line
/// error and exit 1 — and generation stops at once instead of running to `--max-tokens`.
#[test]
fn a_closed_stdout_is_an_error_not_a_panic() {
    let gemma = common::gemma();
    let model = gemma.to_str().unwrap();
    let runs: [&[&str]; 3] = [
        &["info"],
        &["tokenize", "--model", model, "Hello world"],
        &["generate", "--model", model, "--prompt", "Once upon a time", "--max-tokens", "200", "--temperature", "0"],
    ];
    for args in runs {
        let mut child = command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Close our end before the program writes anything.
        drop(child.stdout.take());
        let started = std::time::Instant::now();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("error: <stdout>") && err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "{args:?} ran on: {err}");
    }
}
