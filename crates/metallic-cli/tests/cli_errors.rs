//! What a user sees when a request is wrong or the output goes away: one line on stderr and a
//! non-zero exit code (or success where the request is valid; a quiet exit where stdout is a
//! closed pipe) — never a panic or a backtrace.
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
    // A directory that holds no model, and a file that is not a model.
    let dir = temp("empty-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let text = temp("notes.txt");
    std::fs::write(&text, "just some notes\n").unwrap();
    let t = text.to_str().unwrap();
    let not_gguf = format!("{t}: not a GGUF file");
    let is_dir = format!("{d}: is a directory; expected a GGUF file (.gguf)");
    let neither = format!(
        "{d}: neither a GGUF file nor a sentence-transformers model directory; expected a .gguf file or a directory \
         holding config.json, tokenizer.json and model.safetensors"
    );
    let no_config =
        format!("{d}: not a model directory (no config.json or modules.json); expected a sentence-transformers");
    let gguf_for_embed = format!("{model}: not a model directory but a file (a GGUF language model");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "--model", d, "--prompt", "x"], &is_dir),
        (vec!["generate", "--model", t, "--prompt", "x"], &not_gguf),
        (vec!["generate", "--model", "/dev/null", "--prompt", "x"], "/dev/null: is not a regular file"),
        (vec!["tokenize", "--model", d, "x"], &neither),
        (vec!["tokenize", "--model", t, "x"], &not_gguf),
        (vec!["embed", "--model", d], &no_config),
        (vec!["embed", "--model", model], &gguf_for_embed),
        (vec!["similarity", "--model", d, "a", "b"], &no_config),
        (vec!["generate", "--model", truncated.to_str().unwrap(), "--prompt", "x"], "truncated.gguf"),
        (vec!["tokenize", "--model", truncated.to_str().unwrap(), "x"], "truncated.gguf"),
        (vec!["generate", "--model", model, "--no-bos", "--prompt", ""], "the prompt has no tokens"),
        (vec!["generate", "--model", model, "--prompt", "x", "--temperature=-1"], "temperature"),
        // A negative number is a value, not a flag: it reaches the range check.
        (vec!["generate", "--model", model, "--prompt", "x", "--temperature", "-1"], "temperature must be"),
        (vec!["generate", "--model", model, "--prompt", "x", "--top-p", "-0.5"], "top-p"),
        (vec!["generate", "--model", model, "--prompt", "x", "--top-p", "2"], "top-p"),
        (vec!["generate", "--model", model, "--prompt-file", "/nonexistent/prompt.txt"], "/nonexistent/prompt.txt"),
        (vec!["bench", "generate", "--model", model, "--batch", "0"], "--batch must be at least 1"),
        (
            vec!["bench", "qmatmul", "--type", "q4-1", "--n", "64", "--k", "256", "--path", "gemv-q8", "--iters", "1"],
            "the GEMV over quantized x takes Q4_K, Q5_K, Q6_K, Q8_0 and Q4_0, not Q4_1",
        ),
        (
            vec![
                "bench",
                "qmatmul",
                "--type",
                "q4-k",
                "--n",
                "64",
                "--k",
                "256",
                "--coop-splits",
                "17",
                "--iters",
                "1",
            ],
            "17 splits of K: 1 to 16, or 0 for the tiles' choice",
        ),
    ];
    for (args, what) in &cases {
        assert_clean_failure(&metallic(args), 1, what, args);
    }
    std::fs::remove_file(&truncated).unwrap();
    std::fs::remove_file(&text).unwrap();
    std::fs::remove_dir(&dir).unwrap();
}

/// Negative numbers are values for every flag: where the flag takes a count, clap's own
/// "invalid value" names the flag (exit 2), never "unexpected argument '-1'".
#[test]
fn negative_numbers_are_values_not_flags() {
    let cases: [&[&str]; 4] = [
        &["generate", "--model", "m.gguf", "--prompt", "x", "--max-tokens", "-1"],
        &["embed", "--model", "dir", "--batch-size", "-1"],
        &["demo", "--n", "-5"],
        &["bench", "embed", "--model", "dir", "--texts", "t.txt", "--repeats", "-2"],
    ];
    for args in cases {
        let out = metallic(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let flag = args[args.len() - 2];
        let value = args[args.len() - 1];
        assert!(err.starts_with(&format!("error: invalid value '{value}' for '{flag} ")), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument") && !err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
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

/// Output that goes nowhere (the reader closed the pipe, as `| head -1` does): a quiet exit with
/// status 141 (128 + SIGPIPE, as for a Unix tool killed by SIGPIPE), nothing on stderr — and
/// generation stops at once instead of running to `--max-tokens`.
#[test]
fn a_closed_stdout_ends_quietly_with_the_sigpipe_status() {
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
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("error") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "{args:?} ran on: {err}");
    }
}

/// Without `XDG_RUNTIME_DIR` (a service, a container, `env -i`), Mesa's software Vulkan driver
/// prints "error: XDG_RUNTIME_DIR is invalid or not set" unless the CLI provides one: a
/// successful run prints no line starting with `error`, and the private directory made for the
/// run is gone afterwards.
#[test]
fn a_missing_runtime_dir_prints_no_error() {
    let models = std::env::var_os("METALLIC_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/metallic/models"));
    let minilm = std::env::var_os("METALLIC_MINILM").map(PathBuf::from).unwrap_or(models.join("all-MiniLM-L6-v2"));
    assert!(minilm.join("config.json").exists(), "run ./scripts/fetch-model.sh first");
    let tmp = temp("runtime-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let runs: [&[&str]; 2] = [&["info"], &["tokenize", "--model", minilm.to_str().unwrap(), "Hello world"]];
    for args in runs {
        for unusable in [None, Some("relative/dir"), Some("/nonexistent/runtime-dir")] {
            let mut cmd = command(args);
            match unusable {
                None => cmd.env_remove("XDG_RUNTIME_DIR"),
                Some(value) => cmd.env("XDG_RUNTIME_DIR", value),
            };
            let out = cmd.env("TMPDIR", &tmp).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{args:?} {unusable:?}: {err}");
            assert!(!out.stdout.is_empty(), "{args:?} {unusable:?}");
            assert!(!err.lines().any(|l| l.trim_start().to_lowercase().starts_with("error")), "{args:?}: {err}");
            let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "{args:?} {unusable:?} left {left:?} in {}", tmp.display());
        }
    }
    std::fs::remove_dir(&tmp).unwrap();
}
