//! Bad model directories and requests give an `Error` naming the file, tensor or field — never
//! a panic and never an embedding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use common::{TempDir, minilm_dir};
use metallic_models::{Embedder, EmbedderOptions, Error};
use safetensors::tensor::{Dtype, TensorView};

/// A tiny BERT (hidden 8, 2 heads, 1 layer) with MiniLM's tokenizer and pipeline files.
fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12
    })
}

fn tiny_tensors() -> Vec<(String, Vec<usize>)> {
    let (h, i) = (8, 16);
    let mut t = vec![
        ("embeddings.word_embeddings.weight".to_string(), vec![30522, h]),
        ("embeddings.position_embeddings.weight".into(), vec![512, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    let l = "encoder.layer.0";
    for p in ["query", "key", "value"] {
        t.push((format!("{l}.attention.self.{p}.weight"), vec![h, h]));
        t.push((format!("{l}.attention.self.{p}.bias"), vec![h]));
    }
    for (name, shape) in [
        ("attention.output.dense.weight", vec![h, h]),
        ("attention.output.dense.bias", vec![h]),
        ("attention.output.LayerNorm.weight", vec![h]),
        ("attention.output.LayerNorm.bias", vec![h]),
        ("intermediate.dense.weight", vec![i, h]),
        ("intermediate.dense.bias", vec![i]),
        ("output.dense.weight", vec![h, i]),
        ("output.dense.bias", vec![h]),
        ("output.LayerNorm.weight", vec![h]),
        ("output.LayerNorm.bias", vec![h]),
    ] {
        t.push((format!("{l}.{name}"), shape));
    }
    t
}

fn write_weights(dir: &Path, tensors: &[(String, Vec<usize>)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| (0..s.iter().product::<usize>()).flat_map(|i| (i as f32 * 1e-3).to_le_bytes()).collect())
        .collect();
    let views =
        tensors.iter().zip(&data).map(|((n, s), d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap()));
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A model directory: MiniLM's json files and tokenizer, the tiny config and weights.
fn tiny_model(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let src = minilm_dir();
    for f in ["tokenizer.json", "modules.json", "sentence_bert_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(src.join("1_Pooling/config.json"), dir.path().join("1_Pooling/config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    write_weights(dir.path(), &tiny_tensors());
    dir
}

fn load(dir: &Path) -> Result<Embedder, Error> {
    Embedder::load(dir)
}

#[test]
fn the_tiny_model_loads_and_embeds() {
    let dir = tiny_model("ok");
    let e = load(dir.path()).unwrap();
    let v = e.embed(&["hello", ""]).unwrap();
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|e| e.len() == 8 && e.iter().all(|x| x.is_finite())));
}

#[test]
fn a_missing_directory_is_named() {
    let err = load(Path::new("/nonexistent/model")).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert_eq!(err.to_string(), "/nonexistent/model: not a model directory");
}

#[test]
fn a_missing_weights_file_is_an_io_error_naming_it() {
    let dir = tiny_model("noweights");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn a_truncated_weights_file_is_rejected() {
    let dir = tiny_model("truncated");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("not a valid safetensors file"), "{err}");
}

#[test]
fn a_wrong_tensor_shape_names_the_tensor_and_both_shapes() {
    let dir = tiny_model("shape");
    let mut tensors = tiny_tensors();
    tensors[7].1 = vec![8, 9]; // encoder.layer.0.attention.self.key.weight
    write_weights(dir.path(), &tensors);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Weight { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("encoder.layer.0.attention.self.key.weight") && msg.contains("[8, 9]") && msg.contains("[8, 8]"),
        "{msg}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tiny_model("missing");
    let tensors: Vec<_> = tiny_tensors().into_iter().filter(|(n, _)| !n.ends_with("output.dense.bias")).collect();
    write_weights(dir.path(), &tensors);
    let err = load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("output.dense.bias`: missing from the file"), "{err}");
}

fn with_config(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Error {
    let dir = tiny_model(tag);
    let mut config = tiny_config();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    load(dir.path()).unwrap_err()
}

#[test]
fn an_unknown_architecture_is_unsupported() {
    let err = with_config("arch", |c| c["model_type"] = "gpt2".into());
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("unsupported model_type `gpt2` (supported: bert)"), "{err}");
}

#[test]
fn absurd_dimensions_name_the_field() {
    let err = with_config("absurd", |c| c["hidden_size"] = (1u64 << 40).into());
    assert!(err.to_string().contains("`hidden_size` is 1099511627776; expected 1 to 16384"), "{err}");
    let err = with_config("zero", |c| c["num_hidden_layers"] = 0.into());
    assert!(err.to_string().contains("`num_hidden_layers` is 0"), "{err}");
    let err = with_config("heads", |c| c["num_attention_heads"] = 3.into());
    assert!(err.to_string().contains("not a multiple of `num_attention_heads` 3"), "{err}");
    let err = with_config("act", |c| c["hidden_act"] = "swish".into());
    assert!(err.to_string().contains("unsupported hidden_act `swish`"), "{err}");
}

#[test]
fn malformed_json_names_the_file() {
    let dir = tiny_model("json");
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": ").unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn unsupported_modules_and_pooling_are_named() {
    let dir = tiny_model("dense");
    let modules = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
        {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#;
    std::fs::write(dir.path().join("modules.json"), modules).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("sentence_transformers.models.Dense"), "{err}");

    let dir = tiny_model("maxpool");
    std::fs::write(dir.path().join("1_Pooling/config.json"), r#"{"pooling_mode_max_tokens": true}"#).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("unsupported pooling mode `max_tokens`"), "{err}");
}

#[test]
fn a_zero_batch_size_is_invalid() {
    let dir = tiny_model("batch");
    let err =
        Embedder::load_with(dir.path(), EmbedderOptions { batch_size: 0, ..EmbedderOptions::default() }).unwrap_err();
    assert_eq!(err.to_string(), "invalid input: batch size must be at least 1");
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_caught() {
    // The embedding lookup would turn an out-of-range id into zeros; the embedder refuses.
    let dir = tiny_model("vocab");
    let mut config = tiny_config();
    config["vocab_size"] = 1000.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut tensors = tiny_tensors();
    tensors[0].1 = vec![1000, 8];
    write_weights(dir.path(), &tensors);
    let e = load(dir.path()).unwrap();
    let err = e.embed(&["hello"]).unwrap_err();
    assert!(err.to_string().contains("token id 7592 is outside the model's vocabulary of 1000"), "{err}");
}
