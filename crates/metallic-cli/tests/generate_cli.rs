//! `metallic generate` and `metallic tokenize` on a GGUF model, as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Command;

fn metallic(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_metallic"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap()
}

/// `metallic args` with `input` piped to its standard input.
fn metallic_with_stdin(args: &[&str], input: &str) -> std::process::Output {
    common::with_stdin(args, input.as_bytes())
}

/// The prompt tokens of a one-token JSON generation, after checking it succeeded.
fn prompt_tokens(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["prompt_tokens"].clone()
}

/// llama.cpp's tokens for "The capital of France is" with BOS (fixtures/gemma3/tokenize.json).
const CAPITAL: [u32; 6] = [2, 818, 5279, 529, 7001, 563];

#[test]
fn prompts_come_from_a_file_or_stdin_with_one_trailing_newline_dropped() {
    let model = common::gemma();
    let model = model.to_str().unwrap();
    let one = ["--max-tokens", "1", "--temperature", "0", "--format", "json"];
    let want = serde_json::json!(CAPITAL);
    let file = std::env::temp_dir().join(format!("metallic-prompt-{}.txt", std::process::id()));
    std::fs::write(&file, "The capital of France is\n").unwrap();
    let from_file =
        metallic(&[&["generate", "--model", model, "--prompt-file", file.to_str().unwrap()][..], &one].concat());
    assert_eq!(prompt_tokens(&from_file), want);
    std::fs::remove_file(&file).unwrap();
    let dash = metallic_with_stdin(
        &[&["generate", "--model", model, "--prompt-file", "-"][..], &one].concat(),
        "The capital of France is\r\n",
    );
    assert_eq!(prompt_tokens(&dash), want);
    let piped =
        metallic_with_stdin(&[&["generate", "--model", model][..], &one].concat(), "The capital of France is\n");
    assert_eq!(prompt_tokens(&piped), want);
    // Only one newline goes: a second one is part of the prompt.
    let two =
        metallic_with_stdin(&[&["generate", "--model", model][..], &one].concat(), "The capital of France is\n\n");
    assert_ne!(prompt_tokens(&two), want);
}

#[test]
fn the_context_is_said_and_checked_before_any_work() {
    let model = common::gemma();
    let model = model.to_str().unwrap();
    let capital = ["generate", "--model", model, "--prompt", "The capital of France is", "--temperature", "0"];
    let out = metallic(&[&capital[..], &["--max-tokens", "0"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("context: 32768 positions (the model's trained context)"), "{err}");
    // Nothing generated, nothing run: counts without made-up speeds.
    assert!(err.contains("prompt: 6 tokens; generation: 0 tokens;") && !err.contains("tokens/s"), "{err}");
    for (extra, named) in [
        (&["--max-tokens", "1000000"][..], &["6 tokens", "1000000", "32768"][..]),
        (&["--max-tokens", "18446744073709551615"], &["18446744073709551615", "32768"]),
        (&["--max-tokens", "4", "--ctx-size", "9"], &["6 tokens", "up to 4", "9 positions"]),
    ] {
        let out = metallic(&[&capital[..], extra].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(named.iter().all(|n| err.contains(n)) && !err.contains("panicked"), "{extra:?}: {err}");
    }
    // A context beyond the trained one is allowed, and said.
    let out = metallic(&[&capital[..], &["--max-tokens", "1", "--ctx-size", "40000", "--format", "json"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("context: 40000 positions (--ctx-size; beyond the model's trained context of 32768)"),
        "{err}"
    );
    assert_eq!(prompt_tokens(&out), serde_json::json!(CAPITAL));
    assert!(err.contains("prompt: 6 tokens in ") && err.contains("generation: 1 token"), "{err}");
}

#[test]
fn greedy_generation_as_json_matches_llama_cpp() {
    let model = common::gemma();
    let args = ["generate", "--model", model.to_str().unwrap(), "--prompt", "The capital of France is"];
    let out = metallic(&[&args[..], &["--max-tokens", "4", "--temperature", "0", "--format", "json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // llama.cpp's greedy tokens for this prompt (fixtures/gemma3/completions.json, "capital").
    assert_eq!(json["prompt_tokens"], serde_json::json!([2, 818, 5279, 529, 7001, 563]));
    assert_eq!(json["tokens"], serde_json::json!([506, 5279, 529, 506]));
    assert_eq!(json["text"], " the capital of the");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens/s") && err.contains("MiB of weights"), "{err}");
    // A (negligible) repetition penalty takes the step-by-step sampling path instead of the
    // pipelined greedy one: the same tokens.
    let sampled = ["--max-tokens", "4", "--temperature", "0", "--repeat-penalty", "1.0001", "--format", "json"];
    let out = metallic(&[&args[..], &sampled].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["tokens"], json["tokens"]);
}

#[test]
fn chat_mode_uses_gemmas_turn_format_and_says_so() {
    let model = common::gemma();
    let args = ["generate", "--model", model.to_str().unwrap(), "--chat", "--prompt", "What is 2+2?"];
    let out = metallic(&[&args[..], &["--max-tokens", "8", "--temperature", "0", "--format", "json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // llama.cpp's prompt and greedy tokens for the same turn (fixtures, "chat_math").
    let prompt = [2, 105, 2364, 107, 3689, 563, 236743, 236778, 236862, 236778, 236881, 106, 107, 105, 4368, 107];
    assert_eq!(json["prompt_tokens"], serde_json::json!(prompt));
    assert_eq!(json["tokens"], serde_json::json!([3689, 563, 236743, 236778, 236862, 236778, 236881, 217716]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no chat template"));
}

#[test]
fn tokenize_a_gguf_prompt_with_and_without_bos() {
    let model = common::gemma();
    let m = model.to_str().unwrap();
    let out = metallic(&["tokenize", "--model", m, "<start_of_turn>user"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[2, 105, 2364]\n");
    let out = metallic(&["tokenize", "--model", m, "--no-bos", "Hello world"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[9259, 1902]\n");
}

#[test]
fn bad_generate_requests_fail_cleanly() {
    let model = common::gemma();
    let not_gguf = std::env::temp_dir().join(format!("metallic-not-gguf-{}.bin", std::process::id()));
    std::fs::write(&not_gguf, b"definitely not a model").unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["generate", "--model", model.to_str().unwrap()],
            "give --prompt TEXT, --prompt-file FILE, or a prompt on stdin",
        ),
        (vec!["generate", "--model", not_gguf.to_str().unwrap(), "--prompt", "x"], "GGUF"),
        (vec!["generate", "--model", "/nonexistent.gguf", "--prompt", "x"], "/nonexistent.gguf"),
    ];
    for (args, message) in cases {
        let out = metallic(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(message) && !err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    std::fs::remove_file(&not_gguf).unwrap();
}
