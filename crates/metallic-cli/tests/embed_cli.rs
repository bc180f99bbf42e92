//! `metallic embed` and `metallic tokenize` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn minilm() -> PathBuf {
    let root = std::env::var_os("METALLIC_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models")
    });
    let dir = std::env::var_os("METALLIC_MINILM").map(PathBuf::from).unwrap_or_else(|| root.join("all-MiniLM-L6-v2"));
    assert!(dir.join("model.safetensors").exists(), "run ./scripts/fetch-model.sh first ({} missing)", dir.display());
    dir
}

fn metallic(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metallic"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reference embeddings by sentence-transformers, by case name.
fn reference(name: &str) -> (String, Vec<f32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../metallic-models/tests/fixtures/minilm/reference.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = json["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    let embedding = case["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    (case["text"].as_str().unwrap().to_string(), embedding)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn embeds_lines_from_stdin_as_jsonl_in_input_order() {
    let model = minilm();
    let (short, want_short) = reference("short");
    let (sentence, want_sentence) = reference("sentence");
    let (_, want_empty) = reference("empty");
    // An empty line is a text (the empty string); a final newline is not.
    let input = format!("{sentence}\r\n{short}\n\n");
    let out = metallic(&["embed", "--model", model.to_str().unwrap()], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Vec<f32>> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(max_diff(&lines[0], &want_sentence) < 1e-4);
    assert!(max_diff(&lines[1], &want_short) < 1e-4);
    assert!(max_diff(&lines[2], &want_empty) < 1e-4);
}

#[test]
fn jsonl_input_carries_newlines_and_npy_output_is_a_numpy_array() {
    let model = minilm();
    let (text, want) = reference("newline_tab");
    assert!(text.contains('\n'));
    let dir = std::env::temp_dir().join(format!("metallic-cli-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("out.npy");
    let input = format!("{}\n\"hello\"\n", serde_json::Value::from(text.as_str()));
    let args = ["embed", "--model", model.to_str().unwrap(), "--input-format", "jsonl", "--format", "npy"];
    let out = metallic(&[&args[..], &["--output", out_path.to_str().unwrap()]].concat(), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let bytes = std::fs::read(&out_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (2, 384)"), "{header}");
    let values: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values.len(), 2 * 384);
    assert!(max_diff(&values[..384], &want) < 1e-4);
}

#[test]
fn tokenize_prints_the_ids_as_json() {
    let model = minilm();
    let out = metallic(&["tokenize", "--model", model.to_str().unwrap(), "Hello world"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[101, 7592, 2088, 102]\n");
}

#[test]
fn bad_input_fails_cleanly_with_no_output() {
    let model = minilm();
    let m = model.to_str().unwrap();
    let cases: [(&[&str], &[u8], &str); 4] = [
        (&["embed", "--model", m], b"fine\n\xff\xfe bad\n", "invalid UTF-8 on line 2"),
        (&["embed", "--model", m, "--input-format", "jsonl"], b"\"ok\"\nnot json\n", "line 2: expected a JSON string"),
        (&["embed", "--model", "/nonexistent"], b"text\n", "/nonexistent: not a model directory"),
        (&["embed", "--model", m, "--input", "/nonexistent.txt"], b"", "/nonexistent.txt: No such file"),
    ];
    for (args, stdin, message) in cases {
        let out = metallic(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} wrote output");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked") && err.lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn empty_input_gives_empty_output() {
    let out = metallic(&["embed", "--model", minilm().to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}
