//! `metallic inspect` on real and hand-made GGUF headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

/// `metallic inspect args…`, which must succeed; its stdout.
fn inspect(args: &[&str]) -> String {
    let out = common::piped(&[&["inspect"], args].concat()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn gemma_is_described_and_supported() {
    let gemma = common::gemma();
    let text = inspect(&[gemma.to_str().unwrap()]);
    for want in
        ["architecture   gemma3", "18 layers, width 640, MLP 2048, 4 heads (1 for keys/values)", "supported      yes"]
    {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&inspect(&[gemma.to_str().unwrap(), "--format", "json"])).unwrap();
    assert_eq!(json["architecture"], "gemma3");
    assert_eq!(json["tokenizer"]["model"], "llama");
    assert_eq!(json["tokenizer"]["tokens"], 262_144);
    assert_eq!(json["supported"], true);
    // The quantization mix adds up to every tensor of the file: 236 tensors, 268 M weights.
    let mix = json["quantization"].as_array().unwrap();
    let tensors: u64 = mix.iter().map(|t| t["tensors"].as_u64().unwrap()).sum();
    let params: u64 = mix.iter().map(|t| t["parameters"].as_u64().unwrap()).sum();
    assert_eq!(tensors, 236);
    assert_eq!(params, json["parameters"].as_u64().unwrap());
    assert!((268_000_000..269_000_000).contains(&params), "{params}");
}

/// A GGUF v3 header with no tensors and string metadata `kv`.
fn header(kv: &[(&str, &str)]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        b.extend(8u32.to_le_bytes()); // string
        b.extend((v.len() as u64).to_le_bytes());
        b.extend(v.as_bytes());
    }
    b
}

#[test]
fn an_unsupported_architecture_is_named_with_the_supported_ones() {
    let path = std::env::temp_dir().join(format!("metallic-inspect-gpt2-{}.gguf", std::process::id()));
    std::fs::write(&path, header(&[("general.architecture", "gpt2"), ("general.name", "tiny")])).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&inspect(&[path.to_str().unwrap(), "--format", "json"])).unwrap();
    let text = inspect(&[path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(json["architecture"], "gpt2");
    assert_eq!(json["name"], "tiny");
    assert_eq!(json["supported"], false);
    assert_eq!(json["parameters"], 0);
    let problems = json["problems"].to_string();
    assert!(problems.contains("gpt2") && problems.contains("gemma3, llama, qwen2, qwen3, phi3"), "{problems}");
    assert!(text.contains("supported      no: "), "{text}");
}

#[test]
fn a_file_that_is_not_gguf_is_an_error() {
    let out = common::piped(&["inspect", "/nonexistent/model.gguf"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.gguf"));
}
