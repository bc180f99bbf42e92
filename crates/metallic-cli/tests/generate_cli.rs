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
        (vec!["generate", "--model", model.to_str().unwrap()], "give --prompt TEXT or --prompt-file FILE"),
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
