//! Bad model directories and requests give an `Error` naming the file, tensor or field — never
//! a panic and never an embedding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use common::{TempDir, minilm_dir};
use metallic::DType;
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
    write_weights_with(dir, tensors, |_, _| {});
}

/// [`write_weights`] after `edit` has changed the values of each tensor (given its name).
fn write_weights_with(dir: &Path, tensors: &[(String, Vec<usize>)], edit: impl Fn(&str, &mut Vec<f32>)) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(name, s)| {
            let mut values: Vec<f32> = (0..s.iter().product::<usize>()).map(|i| i as f32 * 1e-3).collect();
            edit(name, &mut values);
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        })
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

/// A context too short for [CLS] and [SEP] is blamed on the file that sets it: `config.json`
/// for `max_position_embeddings`, `sentence_bert_config.json` for `max_seq_length`.
#[test]
fn too_short_inputs_name_the_file_that_sets_them() {
    let err = with_config("positions", |c| c["max_position_embeddings"] = 1.into());
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("config.json: `max_position_embeddings` is 1; expected at least 2"), "{msg}");
    assert!(!msg.contains("sentence_bert_config.json"), "{msg}");

    let dir = tiny_model("seqlen");
    std::fs::write(dir.path().join("sentence_bert_config.json"), r#"{"max_seq_length": 1}"#).unwrap();
    let msg = load(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("sentence_bert_config.json: `max_seq_length` is 1; expected at least 2"), "{msg}");

    // A short but valid context from either file still loads (inputs are truncated to it).
    let dir = tiny_model("seqlen2");
    std::fs::write(dir.path().join("sentence_bert_config.json"), r#"{"max_seq_length": 2}"#).unwrap();
    assert_eq!(load(dir.path()).unwrap().max_seq_length(), 2);
}

/// Writes the tiny model with `value` at flat position `at` of tensor `tensor`, and loads it
/// stored as `dtype`.
fn with_value(tag: &str, tensor: &str, at: usize, value: f32, dtype: DType) -> Result<Embedder, Error> {
    let dir = tiny_model(tag);
    write_weights_with(dir.path(), &tiny_tensors(), |name, values| {
        if name == tensor {
            values[at] = value;
        }
    });
    Embedder::load_with(dir.path(), EmbedderOptions { dtype, ..EmbedderOptions::default() })
}

/// A NaN or infinite weight is an error at load time naming the file, the tensor and the
/// element, whichever way the tensor is loaded (uploaded as is, fused with others, or summed).
#[test]
fn non_finite_weights_name_the_file_tensor_and_element() {
    let cases = [
        ("embeddings.LayerNorm.weight", 3, f32::NAN, "element [3] is NaN"),
        ("encoder.layer.0.attention.self.key.weight", 8 * 2 + 5, f32::INFINITY, "element [2, 5] is inf"),
        ("embeddings.token_type_embeddings.weight", 1, f32::NEG_INFINITY, "element [0, 1] is -inf"),
        ("embeddings.word_embeddings.weight", 7592 * 8, f32::NAN, "element [7592, 0] is NaN"),
    ];
    for (tensor, at, value, element) in cases {
        for dtype in [DType::F32, DType::F16] {
            let err = with_value("nan", tensor, at, value, dtype).unwrap_err();
            assert!(matches!(err, Error::Weight { .. }), "{tensor}: {err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("model.safetensors: tensor `")
                    && msg.contains(&format!("{tensor}`: {element}; weights must be finite numbers")),
                "{tensor} {dtype:?}: {msg}"
            );
        }
    }
}

/// A finite weight that f16 cannot hold is an error when the model is stored in f16 (it would
/// become infinity) and loads in f32; so is a position embedding whose sum with the token-type
/// embedding leaves the range.
#[test]
fn weights_beyond_f16_are_refused_only_in_f16() {
    let name = "encoder.layer.0.output.dense.weight";
    let err = with_value("f16", name, 17, 1e5, DType::F16).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{name}`: element [1, 1] is 100000, outside f16's range")), "{msg}");
    let embedder = with_value("f16ok", name, 17, 1e5, DType::F32).unwrap();
    assert_eq!(embedder.dim(), 8);

    let dir = tiny_model("sum");
    write_weights_with(dir.path(), &tiny_tensors(), |name, values| {
        if name.starts_with("embeddings.position_embeddings") || name.starts_with("embeddings.token_type") {
            values[0] = 40000.0;
        }
    });
    let err = Embedder::load_with(dir.path(), EmbedderOptions { dtype: DType::F16, ..EmbedderOptions::default() })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("embeddings.position_embeddings.weight`: plus token type 0's embedding: element [0, 0] is 80000"),
        "{msg}"
    );
    assert!(Embedder::load(dir.path()).is_ok());
}
