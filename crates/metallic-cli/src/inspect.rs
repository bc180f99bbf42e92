//! `metallic inspect`: what a GGUF file holds and whether metallic runs it, without loading any
//! weights (only the header is read; the tensor data stays mapped and untouched).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::output::outln;
use metallic_models::Result;
use metallic_models::decoder::{DecoderConfig, SUPPORTED_ARCHITECTURES};
use metallic_models::gguf::{GgufFile, GgufValue};
use metallic_models::vocab::Vocab;

/// How the report is printed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InspectFormat {
    /// Aligned `key: value` lines.
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `metallic inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A GGUF model file.
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
    format: InspectFormat,
}

/// One weight type's share of the file.
struct TypeShare {
    tensors: usize,
    elements: u64,
    bytes: u64,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let file = GgufFile::open(&args.file)?;
    let report = report(&file);
    match args.format {
        InspectFormat::Json => outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        InspectFormat::Text => print_text(&report)?,
    }
    Ok(())
}

/// The report as JSON (the text form prints the same fields).
fn report(file: &GgufFile) -> Value {
    let arch = file.get_str("general.architecture").ok().map(str::to_string);
    let text = |key: &str| file.get_str(key).ok().map(str::to_string);
    let int = |key: &str| file.get(key).and_then(GgufValue::as_integer).and_then(|v| u64::try_from(v).ok());
    let arch_int = |k: &str| arch.as_deref().and_then(|a| int(&format!("{a}.{k}")));

    let mut types: BTreeMap<String, TypeShare> = BTreeMap::new();
    for t in file.tensors() {
        let share = types.entry(t.ty().to_string()).or_insert(TypeShare { tensors: 0, elements: 0, bytes: 0 });
        share.tensors += 1;
        share.elements += t.elements() as u64;
        share.bytes += t.size_bytes() as u64;
    }
    let parameters: u64 = types.values().map(|s| s.elements).sum();
    let weight_bytes: u64 = types.values().map(|s| s.bytes).sum();
    let mut mix: Vec<(&String, &TypeShare)> = types.iter().collect();
    mix.sort_by_key(|(_, share)| std::cmp::Reverse(share.bytes));
    let quantization: Vec<Value> = mix
        .iter()
        .map(|(ty, s)| json!({"type": ty, "tensors": s.tensors, "parameters": s.elements, "bytes": s.bytes}))
        .collect();
    let mut unsupported_types: Vec<String> =
        file.tensors().iter().filter(|t| !t.ty().has_kernels()).map(|t| t.ty().to_string()).collect();
    unsupported_types.sort();
    unsupported_types.dedup();

    let tokens = file.get("tokenizer.ggml.tokens").and_then(|v| match v {
        GgufValue::Array(a) => Some(a.len()),
        _ => None,
    });
    // Whether metallic runs it: the decoder's configuration, the tokenizer and the weight types.
    let decoder = DecoderConfig::from_gguf(file).map(|_| ()).map_err(|e| e.to_string());
    let vocab = Vocab::from_gguf(file).map(|_| ()).map_err(|e| e.to_string());
    let mut problems: Vec<String> = [decoder.err(), vocab.err()].into_iter().flatten().collect();
    if !unsupported_types.is_empty() {
        problems.push(format!("weight types without GPU kernels: {}", unsupported_types.join(", ")));
    }
    json!({
        "file": file.path().display().to_string(),
        "file_bytes": file.file_size(),
        "gguf_version": file.version(),
        "name": text("general.name"),
        "architecture": arch,
        "parameters": parameters,
        "weight_bytes": weight_bytes,
        "layers": arch_int("block_count"),
        "embedding_length": arch_int("embedding_length"),
        "feed_forward_length": arch_int("feed_forward_length"),
        "heads": arch_int("attention.head_count"),
        "kv_heads": arch_int("attention.head_count_kv").or_else(|| arch_int("attention.head_count")),
        "context_length": arch_int("context_length"),
        "quantization": quantization,
        "file_type": int("general.file_type"),
        "tokenizer": {
            "model": text("tokenizer.ggml.model"),
            "pre": text("tokenizer.ggml.pre"),
            "tokens": tokens,
        },
        "chat_template": file.get("tokenizer.chat_template").is_some(),
        "supported": problems.is_empty(),
        "problems": problems,
        "supported_architectures": SUPPORTED_ARCHITECTURES,
    })
}

fn print_text(r: &Value) -> Result<()> {
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let line = |label: &str, v: String| format!("{label:<14} {v}");
    let mut out = vec![line("file", show(&r["file"]))];
    let params = r["parameters"].as_u64().unwrap_or(0) as f64;
    let size = r["weight_bytes"].as_u64().unwrap_or(0) as f64;
    out.push(line("name", show(&r["name"])));
    out.push(line("architecture", show(&r["architecture"])));
    out.push(line(
        "parameters",
        format!(
            "{:.1} M ({:.0} MiB of weights, {:.2} bits each)",
            params / 1e6,
            size / 1048576.0,
            8.0 * size / params.max(1.0)
        ),
    ));
    out.push(line(
        "shape",
        format!(
            "{} layers, width {}, MLP {}, {} heads ({} for keys/values)",
            show(&r["layers"]),
            show(&r["embedding_length"]),
            show(&r["feed_forward_length"]),
            show(&r["heads"]),
            show(&r["kv_heads"])
        ),
    ));
    out.push(line("context", show(&r["context_length"])));
    let mix: Vec<String> = r["quantization"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{} ×{} ({:.0} MiB)",
                show(&t["type"]),
                t["tensors"],
                t["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            )
        })
        .collect();
    out.push(line("weights", mix.join(", ")));
    let tok = &r["tokenizer"];
    out.push(line(
        "tokenizer",
        format!("{}, pre {}, {} tokens", show(&tok["model"]), show(&tok["pre"]), show(&tok["tokens"])),
    ));
    out.push(line("chat template", if r["chat_template"] == true { "yes" } else { "no" }.into()));
    let problems: Vec<String> = r["problems"].as_array().into_iter().flatten().map(show).collect();
    let supported = if problems.is_empty() { "yes".to_string() } else { format!("no: {}", problems.join("; ")) };
    out.push(line("supported", supported));
    outln!("{}", out.join("\n"));
    Ok(())
}
