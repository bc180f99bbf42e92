//! The GGUF reader: a round trip of every value type through a small test-side writer, every
//! validation error (with the message a user sees), every truncation of a valid file, and
//! agreement with gguf-py's reader on a file written by gguf-py's writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};

use common::TempDir;
use metallic::quant::QuantType;
use metallic_models::gguf::{DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_METADATA_ENTRIES, MAX_TENSORS};
use metallic_models::{Error, GgufArray, GgufFile, GgufString, GgufType, GgufValue};

// ---------------------------------------------------------------------------------------------
// A small GGUF writer, able to write malformed files too.
// ---------------------------------------------------------------------------------------------

struct TensorSpec {
    name: Vec<u8>,
    dims: Vec<u64>,
    type_id: u32,
    /// `None`: placed after the previous tensor, aligned.
    offset: Option<u64>,
    data: Vec<u8>,
}

struct Builder {
    magic: [u8; 4],
    version: u32,
    kv: Vec<(Vec<u8>, GgufValue)>,
    /// Raw `(key, type id, value bytes)` entries appended after `kv`, for malformed values.
    raw_kv: Vec<(Vec<u8>, u32, Vec<u8>)>,
    tensors: Vec<TensorSpec>,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s);
}

fn put_value(buf: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => buf.push(u8::from(*x)),
        GgufValue::String(s) => put_str(buf, s.as_bytes()),
        GgufValue::Array(a) => put_array(buf, a),
        GgufValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(buf: &mut Vec<u8>, a: &GgufArray) {
    buf.extend_from_slice(&a.element_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        GgufArray::U8(v) => each!(v),
        GgufArray::I8(v) => each!(v),
        GgufArray::U16(v) => each!(v),
        GgufArray::I16(v) => each!(v),
        GgufArray::U32(v) => each!(v),
        GgufArray::I32(v) => each!(v),
        GgufArray::F32(v) => each!(v),
        GgufArray::U64(v) => each!(v),
        GgufArray::I64(v) => each!(v),
        GgufArray::F64(v) => each!(v),
        GgufArray::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        GgufArray::String(v) => v.iter().for_each(|s| put_str(buf, s.as_bytes())),
        GgufArray::Array(v) => v.iter().for_each(|inner| put_array(buf, inner)),
    }
}

fn s(text: &str) -> GgufValue {
    GgufValue::String(text.into())
}

impl Builder {
    fn new() -> Self {
        Builder {
            magic: *b"GGUF",
            version: 3,
            kv: Vec::new(),
            raw_kv: Vec::new(),
            tensors: Vec::new(),
            tensor_count: None,
            kv_count: None,
        }
    }

    fn kv(mut self, key: &str, v: GgufValue) -> Self {
        self.kv.push((key.as_bytes().to_vec(), v));
        self
    }

    fn raw_kv(mut self, key: &str, type_id: u32, value: Vec<u8>) -> Self {
        self.raw_kv.push((key.as_bytes().to_vec(), type_id, value));
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: QuantType) -> Self {
        let elems: u64 = dims.iter().product();
        let bytes = ty.bytes_for(elems as usize).expect("whole blocks");
        let data = (0..bytes).map(|i| (i * 31 + self.tensors.len() * 7 + 1) as u8).collect();
        self.tensors.push(TensorSpec {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            type_id: ty.ggml_id(),
            offset: None,
            data,
        });
        self
    }

    fn raw_tensor(mut self, spec: TensorSpec) -> Self {
        self.tensors.push(spec);
        self
    }

    /// The alignment used to lay the file out: `general.alignment` when it is a valid u32, else
    /// the default (so that files declaring an invalid one are otherwise well formed).
    fn layout_alignment(&self) -> u64 {
        for (k, v) in &self.kv {
            if k == b"general.alignment"
                && let Some(a) = v.as_integer().and_then(|a| u32::try_from(a).ok())
                && a.is_power_of_two()
            {
                return u64::from(a);
            }
        }
        DEFAULT_ALIGNMENT
    }

    fn build(&self) -> Vec<u8> {
        let align = self.layout_alignment();
        let mut b = Vec::new();
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.kv_count.unwrap_or((self.kv.len() + self.raw_kv.len()) as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut b, k);
            b.extend_from_slice(&v.ty().id().to_le_bytes());
            put_value(&mut b, v);
        }
        for (k, ty, raw) in &self.raw_kv {
            put_str(&mut b, k);
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(raw);
        }
        let mut next = 0u64;
        let mut placed = Vec::new();
        for t in &self.tensors {
            let offset = t.offset.unwrap_or(next);
            next = (offset + t.data.len() as u64).div_ceil(align) * align;
            put_str(&mut b, &t.name);
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.type_id.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            placed.push((offset, &t.data));
        }
        if !self.tensors.is_empty() {
            b.resize((b.len() as u64).div_ceil(align) as usize * align as usize, 0);
        }
        let data_start = b.len();
        for (offset, data) in placed.into_iter().filter(|(_, data)| !data.is_empty()) {
            let at = data_start + offset as usize;
            if b.len() < at + data.len() {
                b.resize(at + data.len(), 0);
            }
            b[at..at + data.len()].copy_from_slice(data);
        }
        b
    }
}

/// A small valid file: several metadata types, arrays, and two tensors.
fn small_valid() -> Builder {
    Builder::new()
        .kv("general.architecture", s("gemma3"))
        .kv("gemma3.block_count", GgufValue::U32(18))
        .kv("gemma3.rope.freq_base", GgufValue::F32(10000.0))
        .kv("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(vec!["<s>".into(), "a".into()])))
        .kv("tokenizer.ggml.scores", GgufValue::Array(GgufArray::F32(vec![0.0, -1.0])))
        .kv(
            "test.nested",
            GgufValue::Array(GgufArray::Array(vec![GgufArray::I32(vec![1]), GgufArray::Bool(vec![true])])),
        )
        .tensor("a", &[4, 2], QuantType::F32)
        .tensor("b", &[32], QuantType::Q8_0)
}

fn parse(b: &Builder) -> Result<GgufFile, Error> {
    GgufFile::from_bytes(b.build())
}

/// The error message of parsing `bytes`, which must fail with `Error::Format`.
fn format_error(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e @ Error::Format { .. }) => e.to_string(),
        Err(other) => panic!("expected Error::Format, got {other:?}"),
    }
}

fn assert_error(b: &Builder, needles: &[&str]) {
    let message = format_error(b.build());
    for needle in needles {
        assert!(message.contains(needle), "message {message:?} does not contain {needle:?}");
    }
    assert!(message.starts_with("<memory>: "), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Round trips.
// ---------------------------------------------------------------------------------------------

fn every_value() -> Vec<(&'static str, GgufValue)> {
    vec![
        ("v.u8", GgufValue::U8(255)),
        ("v.i8", GgufValue::I8(-128)),
        ("v.u16", GgufValue::U16(65535)),
        ("v.i16", GgufValue::I16(-32768)),
        ("v.u32", GgufValue::U32(u32::MAX)),
        ("v.i32", GgufValue::I32(i32::MIN)),
        ("v.f32", GgufValue::F32(-1.5e-7)),
        ("v.bool.true", GgufValue::Bool(true)),
        ("v.bool.false", GgufValue::Bool(false)),
        ("v.string", s("héllo ✓ 日本")),
        ("v.string.empty", s("")),
        ("v.string.not_utf8", GgufValue::String(GgufString::from(vec![b'a', 0xff, 0xfe]))),
        ("v.u64", GgufValue::U64(u64::MAX)),
        ("v.i64", GgufValue::I64(i64::MIN)),
        ("v.f64", GgufValue::F64(std::f64::consts::PI)),
        ("a.u8", GgufValue::Array(GgufArray::U8(vec![0, 1, 255]))),
        ("a.i8", GgufValue::Array(GgufArray::I8(vec![-1, 127]))),
        ("a.u16", GgufValue::Array(GgufArray::U16(vec![7, 65535]))),
        ("a.i16", GgufValue::Array(GgufArray::I16(vec![-7]))),
        ("a.u32", GgufValue::Array(GgufArray::U32(vec![1, 2, 3]))),
        ("a.i32", GgufValue::Array(GgufArray::I32(vec![-3, 0, 3]))),
        ("a.f32", GgufValue::Array(GgufArray::F32(vec![0.5, -0.25, 1e30]))),
        ("a.bool", GgufValue::Array(GgufArray::Bool(vec![true, false]))),
        ("a.string", GgufValue::Array(GgufArray::String(vec!["x".into(), "".into(), "ü".into()]))),
        ("a.u64", GgufValue::Array(GgufArray::U64(vec![u64::MAX]))),
        ("a.i64", GgufValue::Array(GgufArray::I64(vec![i64::MIN, i64::MAX]))),
        ("a.f64", GgufValue::Array(GgufArray::F64(vec![1e-300]))),
        ("a.empty", GgufValue::Array(GgufArray::F32(vec![]))),
        ("a.empty_strings", GgufValue::Array(GgufArray::String(vec![]))),
        (
            "a.nested",
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::I32(vec![1, 2]),
                GgufArray::String(vec!["deep".into()]),
                GgufArray::Array(vec![GgufArray::U8(vec![9]), GgufArray::Array(vec![])]),
                GgufArray::F64(vec![]),
            ])),
        ),
    ]
}

#[test]
fn every_value_type_round_trips() {
    let mut b = Builder::new();
    for (k, v) in every_value() {
        b = b.kv(k, v);
    }
    let f = parse(&b).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert!(f.tensors().is_empty());
    let expected: Vec<(String, GgufValue)> = every_value().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(f.metadata(), expected.as_slice());
    for (k, v) in &expected {
        assert_eq!(f.get(k), Some(v), "{k}");
    }
    assert_eq!(f.get("absent"), None);
    assert_eq!(f.get("a.nested").unwrap().type_name(), "array of array of i32");
    assert_eq!(f.get("a.u16").unwrap().ty(), GgufType::Array);
    let Some(GgufValue::Array(a)) = f.get("a.u16") else { panic!() };
    assert_eq!((a.element_type(), a.len(), a.is_empty()), (GgufType::U16, 2, false));

    // Version 2 files have the same layout.
    let mut v2 = b;
    v2.version = 2;
    assert_eq!(parse(&v2).unwrap().version(), 2);
}

#[test]
fn typed_accessors_convert_or_name_the_key_and_type() {
    let f = parse(
        &Builder::new()
            .kv("u8", GgufValue::U8(7))
            .kv("i32", GgufValue::I32(70000))
            .kv("neg", GgufValue::I32(-1))
            .kv("big", GgufValue::U64(1 << 40))
            .kv("f32", GgufValue::F32(0.5))
            .kv("f64", GgufValue::F64(0.25))
            .kv("bool", GgufValue::Bool(true))
            .kv("str", s("llama"))
            .kv("bad_utf8", GgufValue::String(GgufString::from(vec![0xc3])))
            .kv("strs", GgufValue::Array(GgufArray::String(vec!["a".into(), "é".into()])))
            .kv("bad_strs", GgufValue::Array(GgufArray::String(vec!["a".into(), GgufString::from(vec![0x80])])))
            .kv("f32s", GgufValue::Array(GgufArray::F32(vec![1.0, 2.0])))
            .kv("i32s", GgufValue::Array(GgufArray::I32(vec![-1, 1]))),
    )
    .unwrap();
    fn err<T>(r: Result<T, Error>) -> String {
        match r {
            Err(e @ Error::Format { .. }) => e.to_string(),
            other => panic!("expected a format error, got {:?}", other.map(|_| ())),
        }
    }

    assert_eq!(f.get_u32("u8").unwrap(), 7);
    assert_eq!(f.get_u32("i32").unwrap(), 70000);
    assert_eq!(f.get_u64("big").unwrap(), 1 << 40);
    assert_eq!(f.get_i64("neg").unwrap(), -1);
    assert_eq!(f.get_f32("f32").unwrap(), 0.5);
    assert_eq!(f.get_f32("f64").unwrap(), 0.25);
    assert!(f.get_bool("bool").unwrap());
    assert_eq!(f.get_str("str").unwrap(), "llama");
    assert_eq!(f.get_str_array("strs").unwrap(), ["a", "é"]);
    assert_eq!(f.get_f32_array("f32s").unwrap(), [1.0, 2.0]);
    assert_eq!(f.get_i32_array("i32s").unwrap(), [-1, 1]);
    assert_eq!(f.get_array("i32s").unwrap().len(), 2);

    let m = err(f.get_u32("neg"));
    assert!(m.contains("`neg`") && m.contains("-1") && m.contains("i32") && m.contains("u32"), "{m}");
    let m = err(f.get_u32("big"));
    assert!(m.contains("`big`") && m.contains("1099511627776") && m.contains("u64"), "{m}");
    let m = err(f.get_u64("neg"));
    assert!(m.contains("`neg`") && m.contains("u64"), "{m}");
    let m = err(f.get_u32("str"));
    assert!(m.contains("`str` is string, expected an integer"), "{m}");
    let m = err(f.get_u32("bool"));
    assert!(m.contains("`bool` is bool"), "{m}");
    let m = err(f.get_f32("u8"));
    assert!(m.contains("`u8` is u8, expected f32"), "{m}");
    let m = err(f.get_bool("u8"));
    assert!(m.contains("`u8` is u8, expected bool"), "{m}");
    let m = err(f.get_str("f32s"));
    assert!(m.contains("`f32s` is array of f32, expected string"), "{m}");
    let m = err(f.get_str("bad_utf8"));
    assert!(m.contains("`bad_utf8`") && m.contains("UTF-8"), "{m}");
    let m = err(f.get_str_array("bad_strs"));
    assert!(m.contains("`bad_strs`: element 1 is not valid UTF-8"), "{m}");
    let m = err(f.get_str_array("f32s"));
    assert!(m.contains("`f32s` is array of f32, expected array of string"), "{m}");
    let m = err(f.get_f32_array("i32s"));
    assert!(m.contains("`i32s` is array of i32, expected array of f32"), "{m}");
    let m = err(f.get_i32_array("strs"));
    assert!(m.contains("`strs` is array of string, expected array of i32"), "{m}");
    let m = err(f.get_array("str"));
    assert!(m.contains("`str` is string, expected an array"), "{m}");
    let m = err(f.get_u32("missing.key"));
    assert!(m.contains("metadata key `missing.key` is missing"), "{m}");

    // The lossy view of a non-UTF-8 string.
    let Some(GgufValue::String(bad)) = f.get("bad_utf8") else { panic!() };
    assert_eq!(bad.as_str(), None);
    assert_eq!(bad.to_string_lossy(), "\u{fffd}");
    assert_eq!(bad.as_bytes(), [0xc3]);
}

#[test]
fn tensors_are_found_in_file_order_with_their_data() {
    let b = Builder::new()
        .kv("general.alignment", GgufValue::U32(64))
        .tensor("token_embd.weight", &[8, 3], QuantType::F32)
        .tensor("norm", &[5], QuantType::F16)
        .tensor("ffn", &[64, 2], QuantType::Q8_0)
        .tensor("out", &[256, 3], QuantType::Q4K)
        .tensor("scalar", &[], QuantType::BF16)
        .tensor("four_d", &[32, 1, 2, 3], QuantType::Q4_0);
    let bytes = b.build();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start() % 64, 0);
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["token_embd.weight", "norm", "ffn", "out", "scalar", "four_d"]);
    for (t, spec) in f.tensors().iter().zip(&b.tensors) {
        assert_eq!(t.dims().iter().map(|&d| d as u64).collect::<Vec<_>>(), spec.dims, "{}", t.name());
        assert_eq!(f.tensor_data(t), spec.data.as_slice(), "{}", t.name());
        assert_eq!(t.size_bytes(), spec.data.len());
        assert_eq!(t.file_offset() % 64, 0);
        assert_eq!(t.file_offset() as u64, f.data_start() + t.offset());
        assert_eq!(f.tensor(t.name()), Some(t));
    }
    let out = f.tensor("out").unwrap();
    assert_eq!(out.ty(), QuantType::Q4K);
    assert_eq!(out.dims(), [256, 3]);
    assert_eq!(out.shape(), [3, 256]);
    assert_eq!(out.elements(), 768);
    assert_eq!(out.size_bytes(), 3 * 144);
    let scalar = f.tensor("scalar").unwrap();
    assert_eq!((scalar.dims(), scalar.elements(), scalar.size_bytes()), (&[][..], 1, 2));
    assert_eq!(f.tensor("missing"), None);
    assert_eq!(f.file_size(), bytes.len());
}

#[test]
fn a_parsed_file_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GgufFile>();
    let f = parse(&small_valid()).unwrap();
    let sizes: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = f.tensors().iter().map(|t| scope.spawn(|| f.tensor_data(t).len())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sizes, [32, 34]);
}

#[test]
fn open_maps_a_file_and_errors_name_it() {
    let dir = TempDir::new("gguf-open");
    let good = dir.path().join("model.gguf");
    std::fs::write(&good, small_valid().build()).unwrap();
    let f = GgufFile::open(&good).unwrap();
    assert_eq!(f.path(), good);
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(f.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()).len(), 34);
    let m = f.get_u32("general.architecture").unwrap_err().to_string();
    assert!(m.starts_with(&format!("{}: ", good.display())), "{m}");

    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGML\x03\0\0\0").unwrap();
    let m = GgufFile::open(&bad).unwrap_err().to_string();
    assert!(m.starts_with(&format!("{}: not a GGUF file", bad.display())), "{m}");

    let missing = dir.path().join("missing.gguf");
    assert!(matches!(GgufFile::open(&missing), Err(Error::Io { ref path, .. }) if *path == missing));
    // A directory is not a GGUF file either (mapping it fails, or it reads as empty).
    assert!(GgufFile::open(dir.path()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Every prefix of a valid file is an error, never a panic.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let full = small_valid().build();
    assert!(GgufFile::from_bytes(full.clone()).is_ok());
    for len in 0..full.len() {
        let result = GgufFile::from_bytes(full[..len].to_vec());
        assert!(matches!(result, Err(Error::Format { .. })), "prefix of {len} bytes: {result:?}");
    }
}

#[test]
fn every_truncation_of_the_gguf_py_fixture_is_an_error_until_the_last_tensor_ends() {
    let full = std::fs::read(fixture_dir().join("fixture.gguf")).unwrap();
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let data_end = f.tensors().iter().map(|t| t.file_offset() + t.size_bytes()).max().unwrap();
    for len in 0..full.len() {
        let result = GgufFile::from_bytes(full[..len].to_vec());
        // gguf-py pads after the last tensor; cutting only padding leaves a valid file.
        assert_eq!(result.is_ok(), len >= data_end, "prefix of {len} bytes: {result:?}");
    }
}

#[test]
fn every_single_byte_corruption_of_a_small_file_is_handled() {
    // Not a fuzzer, but every byte of a valid file set to a few hostile values: each parse
    // returns (Ok or Err) without panicking or allocating absurdly.
    let full = small_valid().build();
    for i in 0..full.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bytes = full.clone();
            bytes[i] = v;
            let _ = GgufFile::from_bytes(bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_magic_is_not_a_gguf_file() {
    let mut b = small_valid();
    b.magic = *b"GGML";
    assert_error(&b, &["not a GGUF file", "47 47 4d 4c", "expected \"GGUF\""]);
    assert!(format_error(Vec::new()).contains("not a GGUF file: 0 bytes"));
    assert!(format_error(b"GG".to_vec()).contains("too short"));
    // A safetensors header is not a GGUF file either.
    assert!(format_error(b"\x08\0\0\0\0\0\0\0{}      ".to_vec()).contains("not a GGUF file"));
}

#[test]
fn versions_other_than_2_and_3_are_rejected() {
    for (version, needle) in [
        (1, "GGUF version 1 is not supported (only versions 2 and 3)"),
        (0, "unsupported GGUF version 0"),
        (4, "unsupported GGUF version 4 (supported: 2 and 3)"),
        (0xdead_beef, "unsupported GGUF version 3735928559"),
    ] {
        let mut b = small_valid();
        b.version = version;
        assert_error(&b, &[needle]);
    }
}

#[test]
fn big_endian_files_are_rejected_clearly() {
    let mut b = small_valid();
    b.version = 3u32.swap_bytes();
    assert_error(&b, &["big-endian GGUF file (version 3 stored big-endian)", "little-endian"]);
}

#[test]
fn huge_counts_are_errors_not_allocations() {
    let mut b = small_valid();
    b.tensor_count = Some(1 << 40);
    assert_error(&b, &["tensor count 1099511627776 exceeds the limit"]);
    let mut b = small_valid();
    b.kv_count = Some(1 << 40);
    assert_error(&b, &["metadata count 1099511627776 exceeds the limit"]);
    // Within the limits, but more than the bytes left could hold.
    let mut b = small_valid();
    b.kv_count = Some(MAX_METADATA_ENTRIES);
    assert_error(&b, &["metadata: count 65536 needs at least 851968 bytes"]);
    let mut b = Builder::new();
    b.tensor_count = Some(MAX_TENSORS);
    assert_error(&b, &["tensor infos: count 1048576 needs at least"]);
    // A metadata array of 2^40 strings (or bytes, or arrays) in a file of a few hundred bytes.
    for (elem, name) in
        [(GgufType::String, "string"), (GgufType::U8, "u8"), (GgufType::Array, "array"), (GgufType::U64, "u64")]
    {
        let mut raw = elem.id().to_le_bytes().to_vec();
        raw.extend_from_slice(&(1u64 << 40).to_le_bytes());
        raw.extend_from_slice(&[0; 64]);
        let b = small_valid().raw_kv("tokenizer.ggml.merges", GgufType::Array.id(), raw);
        assert_error(
            &b,
            &["metadata key `tokenizer.ggml.merges`", &format!("array of 1099511627776 {name}"), "remain"],
        );
    }
    // u64::MAX elements of u64: the byte count itself overflows.
    let mut raw = GgufType::U64.id().to_le_bytes().to_vec();
    raw.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_error(&Builder::new().raw_kv("k", GgufType::Array.id(), raw), &["count 18446744073709551615", "remain"]);
}

#[test]
fn huge_string_lengths_are_errors() {
    for len in [1u64 << 62, u64::MAX, 100] {
        let mut raw = len.to_le_bytes().to_vec();
        raw.extend_from_slice(b"short");
        let b = Builder::new().raw_kv("general.name", GgufType::String.id(), raw);
        assert_error(&b, &["metadata key `general.name`", &format!("string length {len}"), "exceeds the 5 bytes left"]);
    }
    // A key whose length runs past the end.
    let mut bytes = Builder::new().build();
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 50).to_le_bytes());
    bytes.extend_from_slice(&[0; 16]);
    let m = format_error(bytes);
    assert!(m.contains("metadata entry 0 (key): string length 1125899906842624"), "{m}");
    // A tensor name running past the end.
    let mut b = Builder::new().tensor("a", &[1], QuantType::F32);
    b.tensors[0].name = vec![b'x'; 4];
    let mut bytes = b.build();
    bytes[24..32].copy_from_slice(&(1u64 << 33).to_le_bytes());
    let m = format_error(bytes);
    assert!(m.contains("tensor 0 (name): string length 8589934592"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// Metadata errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn nesting_deeper_than_the_limit_is_an_error() {
    fn nest(depth: usize) -> GgufArray {
        (1..depth).fold(GgufArray::I32(vec![1]), |inner, _| GgufArray::Array(vec![inner]))
    }
    let ok = Builder::new().kv("deep", GgufValue::Array(nest(MAX_ARRAY_DEPTH)));
    assert!(parse(&ok).is_ok());
    let too_deep = Builder::new().kv("deep", GgufValue::Array(nest(MAX_ARRAY_DEPTH + 1)));
    assert_error(&too_deep, &["metadata key `deep`", "nested deeper than 8 levels"]);
    // Deep nesting from a tiny, hostile file: 10,000 headers of "array of 1 array".
    let mut raw = Vec::new();
    for _ in 0..10_000 {
        raw.extend_from_slice(&GgufType::Array.id().to_le_bytes());
        raw.extend_from_slice(&1u64.to_le_bytes());
    }
    assert_error(&Builder::new().raw_kv("deep", GgufType::Array.id(), raw), &["nested deeper"]);
}

#[test]
fn unknown_value_types_are_errors() {
    assert_error(&Builder::new().raw_kv("k", 13, vec![0; 16]), &["metadata key `k`: unknown value type 13"]);
    let mut raw = 99u32.to_le_bytes().to_vec();
    raw.extend_from_slice(&1u64.to_le_bytes());
    assert_error(
        &Builder::new().raw_kv("k", GgufType::Array.id(), raw),
        &["metadata key `k` (array element type): unknown value type 99"],
    );
}

#[test]
fn bools_must_be_0_or_1() {
    assert_error(
        &Builder::new().raw_kv("flag", GgufType::Bool.id(), vec![2]),
        &["metadata key `flag`: bool byte 2", "neither 0 nor 1"],
    );
    let mut raw = GgufType::Bool.id().to_le_bytes().to_vec();
    raw.extend_from_slice(&2u64.to_le_bytes());
    raw.extend_from_slice(&[1, 7]);
    assert_error(&Builder::new().raw_kv("flags", GgufType::Array.id(), raw), &["(element 1)", "bool byte 7"]);
}

#[test]
fn keys_and_tensor_names_must_be_utf8() {
    let mut b = Builder::new();
    b.kv.push((vec![b'k', 0xff], GgufValue::U8(1)));
    assert_error(&b, &["metadata entry 0 (key)", "not valid UTF-8"]);
    let mut b = Builder::new().tensor("t", &[1], QuantType::F32);
    b.tensors[0].name = vec![0xc0, 0x80];
    assert_error(&b, &["tensor 0 (name)", "not valid UTF-8"]);
}

#[test]
fn duplicate_keys_are_rejected() {
    let b = small_valid().kv("gemma3.block_count", GgufValue::U32(1));
    assert_error(&b, &["metadata key `gemma3.block_count` appears twice"]);
}

#[test]
fn alignment_must_be_a_non_zero_power_of_two() {
    for (a, needle) in
        [(0u32, "is 0, expected a non-zero power of two"), (3, "is 3, expected a non-zero power of two"), (48, "is 48")]
    {
        assert_error(
            &small_valid().kv("general.alignment", GgufValue::U32(a)),
            &["metadata key `general.alignment`", needle],
        );
    }
    assert_error(&small_valid().kv("general.alignment", s("32")), &["`general.alignment` is string", "expected a u32"]);
    assert_error(
        &small_valid().kv("general.alignment", GgufValue::I32(-32)),
        &["`general.alignment` is -32 (i32), expected a u32"],
    );
    // Any integer type holding a valid value is accepted (the data then sits at 16-byte steps).
    let b = Builder::new().kv("general.alignment", GgufValue::U8(16)).tensor("t", &[1], QuantType::F32).tensor(
        "u",
        &[1],
        QuantType::F32,
    );
    let f = parse(&b).unwrap();
    assert_eq!(f.alignment(), 16);
    assert_eq!(f.data_start() % 16, 0);
    assert_eq!(f.tensors()[1].offset(), 16);
    assert_eq!(f.tensor_data(&f.tensors()[1]), b.tensors[1].data.as_slice());
}

// ---------------------------------------------------------------------------------------------
// Tensor info errors.
// ---------------------------------------------------------------------------------------------

fn spec(name: &str, dims: &[u64], type_id: u32, offset: Option<u64>, bytes: usize) -> TensorSpec {
    TensorSpec { name: name.as_bytes().to_vec(), dims: dims.to_vec(), type_id, offset, data: vec![0x5a; bytes] }
}

#[test]
fn misaligned_offsets_are_rejected() {
    let b = Builder::new().tensor("a", &[4], QuantType::F32).raw_tensor(spec("b", &[4], 0, Some(48), 16));
    assert_error(&b, &["tensor `b`: data offset 48 is not a multiple of the alignment 32"]);
    let b = Builder::new().kv("general.alignment", GgufValue::U32(128)).raw_tensor(spec("c", &[4], 0, Some(64), 16));
    assert_error(&b, &["tensor `c`: data offset 64 is not a multiple of the alignment 128"]);
}

#[test]
fn data_past_the_end_of_the_file_is_rejected() {
    let mut bytes = Builder::new().tensor("w", &[8, 4], QuantType::F32).build();
    bytes.truncate(bytes.len() - 1);
    let m = format_error(bytes);
    assert!(
        m.contains("tensor `w`: data [") && m.contains("(128 bytes of F32, dims [8, 4]) extends past the end"),
        "{m}"
    );
    // A huge offset, a huge tensor, and an offset that overflows when added.
    let b = Builder::new().tensor("a", &[4], QuantType::F32).raw_tensor(spec("far", &[4], 0, Some(1 << 40), 0));
    assert_error(&b, &["tensor `far`", "extends past the end of the file"]);
    let b = Builder::new().raw_tensor(spec("huge", &[1 << 30, 1 << 30], 0, None, 0));
    assert_error(&b, &["tensor `huge`", "extends past the end of the file"]);
    let b = Builder::new().raw_tensor(spec("wrap", &[4], 0, Some(u64::MAX - 31), 0));
    assert_error(&b, &["tensor `wrap`: data offset 18446744073709551584 + 16 bytes overflows"]);
}

#[test]
fn overlapping_tensors_are_rejected() {
    let b = Builder::new().raw_tensor(spec("a", &[16], 0, Some(0), 64)).raw_tensor(spec("b", &[4], 0, Some(32), 16));
    assert_error(&b, &["tensors `a`", "and `b`", "overlap"]);
    // The same range twice, declared in the other order.
    let b = Builder::new().raw_tensor(spec("x", &[8], 0, Some(32), 32)).raw_tensor(spec("y", &[8], 0, Some(32), 32));
    assert_error(&b, &["overlap"]);
    // Touching but not overlapping is fine.
    let b = Builder::new().raw_tensor(spec("a", &[8], 0, Some(32), 32)).raw_tensor(spec("b", &[8], 0, Some(0), 32));
    assert!(parse(&b).is_ok());
}

#[test]
fn unknown_type_ids_name_the_tensor_and_id() {
    for id in [4, 5, 16, 99, u32::MAX] {
        let b = Builder::new().raw_tensor(spec("blk.3.attn_q.weight", &[32], id, None, 64));
        assert_error(&b, &[&format!("tensor `blk.3.attn_q.weight`: unknown or unsupported GGML type id {id}")]);
    }
}

#[test]
fn more_than_four_dims_are_rejected() {
    let b = Builder::new().raw_tensor(spec("t", &[1, 1, 1, 1, 1], 0, None, 4));
    assert_error(&b, &["tensor `t`: 5 dimensions, at most 4 are supported"]);
    let mut bytes = Builder::new().raw_tensor(spec("t", &[1], 0, None, 4)).build();
    // n_dims sits after the header (24 bytes) and the name (8 + 1).
    bytes[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(format_error(bytes).contains("4294967295 dimensions"));
}

#[test]
fn zero_dims_are_rejected() {
    let b = Builder::new().raw_tensor(spec("t", &[4, 0, 2], 0, None, 0));
    assert_error(&b, &["tensor `t`: dim 1 is 0"]);
}

#[test]
fn element_counts_overflowing_are_rejected() {
    let b = Builder::new().raw_tensor(spec("t", &[1 << 32, 1 << 32, 1 << 32], 0, None, 0));
    assert_error(&b, &["tensor `t`: element count overflows"]);
    // Elements fit but bytes do not: (2^62 elements of F32).
    let b = Builder::new().raw_tensor(spec("t", &[1 << 31, 1 << 31], 0, None, 0));
    assert_error(&b, &["tensor `t`: 4611686018427387904 elements of F32", "overflows"]);
}

#[test]
fn rows_must_be_whole_blocks() {
    let b = Builder::new().raw_tensor(spec("q", &[33], QuantType::Q8_0.ggml_id(), None, 64));
    assert_error(&b, &["tensor `q`: row length (dims[0]) 33 is not a multiple of Q8_0's block size 32"]);
    let b = Builder::new().raw_tensor(spec("k", &[100, 256], QuantType::Q4K.ggml_id(), None, 64));
    assert_error(&b, &["tensor `k`: row length (dims[0]) 100 is not a multiple of Q4_K's block size 256"]);
    // A whole number of blocks overall is not enough: GGML quantizes row by row.
    let b = Builder::new().raw_tensor(spec("r", &[16, 2], QuantType::Q4_0.ggml_id(), None, 18));
    assert_error(&b, &["row length (dims[0]) 16"]);
}

#[test]
fn duplicate_tensor_names_are_rejected() {
    let b = small_valid().tensor("a", &[4], QuantType::F32);
    assert_error(&b, &["tensor name `a` appears twice"]);
}

// ---------------------------------------------------------------------------------------------
// Agreement with gguf-py (llama.cpp's Python reader) on a file its writer made.
// ---------------------------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

/// gguf-py's name for a value type.
fn py_type(t: GgufType) -> &'static str {
    match t {
        GgufType::U8 => "UINT8",
        GgufType::I8 => "INT8",
        GgufType::U16 => "UINT16",
        GgufType::I16 => "INT16",
        GgufType::U32 => "UINT32",
        GgufType::I32 => "INT32",
        GgufType::F32 => "FLOAT32",
        GgufType::Bool => "BOOL",
        GgufType::String => "STRING",
        GgufType::Array => "ARRAY",
        GgufType::U64 => "UINT64",
        GgufType::I64 => "INT64",
        GgufType::F64 => "FLOAT64",
    }
}

/// gguf-py's `ReaderField.types`: the value's type, then for arrays the first element's types.
fn py_types(v: &GgufValue) -> Vec<&'static str> {
    fn array_types(a: &GgufArray, out: &mut Vec<&'static str>) {
        match a {
            GgufArray::Array(inner) => {
                out.push("ARRAY");
                if let Some(first) = inner.first() {
                    array_types(first, out);
                }
            }
            other if other.is_empty() => {}
            other => out.push(py_type(other.element_type())),
        }
    }
    let mut out = vec![py_type(v.ty())];
    if let GgufValue::Array(a) = v {
        array_types(a, &mut out);
    }
    out
}

/// gguf-py's `ReaderField.contents()`: scalars as they are, arrays flattened to their leaves.
fn py_contents(v: &GgufValue) -> serde_json::Value {
    use serde_json::{Value, json};
    fn leaves(a: &GgufArray, out: &mut Vec<Value>) {
        match a {
            GgufArray::U8(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::I8(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::U16(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::I16(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::U32(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::I32(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::F32(v) => out.extend(v.iter().map(|&x| json!(f64::from(x)))),
            GgufArray::Bool(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::String(v) => out.extend(v.iter().map(|x| json!(x.as_str().unwrap()))),
            GgufArray::U64(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::I64(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::F64(v) => out.extend(v.iter().map(|x| json!(x))),
            GgufArray::Array(v) => v.iter().for_each(|inner| leaves(inner, out)),
        }
    }
    match v {
        GgufValue::U8(x) => json!(x),
        GgufValue::I8(x) => json!(x),
        GgufValue::U16(x) => json!(x),
        GgufValue::I16(x) => json!(x),
        GgufValue::U32(x) => json!(x),
        GgufValue::I32(x) => json!(x),
        GgufValue::F32(x) => json!(f64::from(*x)),
        GgufValue::Bool(x) => json!(x),
        GgufValue::String(x) => json!(x.as_str().unwrap()),
        GgufValue::U64(x) => json!(x),
        GgufValue::I64(x) => json!(x),
        GgufValue::F64(x) => json!(x),
        GgufValue::Array(a) => {
            let mut out = Vec::new();
            leaves(a, &mut out);
            Value::Array(out)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn agrees_with_gguf_py_on_its_own_file() {
    let dir = fixture_dir();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fixture.json")).unwrap()).unwrap();
    let f = GgufFile::open(dir.join("fixture.gguf")).unwrap();

    assert_eq!(u64::from(f.version()), reference["version"].as_u64().unwrap());
    assert_eq!(f.file_size() as u64, reference["file_size"].as_u64().unwrap());
    assert_eq!(f.alignment(), reference["alignment"].as_u64().unwrap());
    assert_eq!(f.alignment(), 64, "the fixture uses a custom alignment");
    assert_eq!(f.data_start(), reference["data_offset"].as_u64().unwrap());

    let fields = reference["fields"].as_array().unwrap();
    assert_eq!(f.metadata().len(), fields.len());
    for ((key, value), field) in f.metadata().iter().zip(fields) {
        assert_eq!(key, field["key"].as_str().unwrap());
        let types: Vec<&str> = field["types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(py_types(value), types, "{key}");
        assert_eq!(py_contents(value), field["value"], "{key}");
    }
    // Nested arrays keep their structure here (gguf-py flattens them).
    assert_eq!(
        f.get("test.array.nested_i32"),
        Some(&GgufValue::Array(GgufArray::Array(vec![GgufArray::I32(vec![1, 2, 3]), GgufArray::I32(vec![4, 5])])))
    );
    assert_eq!(f.get_str("test.string").unwrap(), "héllo, wörld ✓ <start_of_turn>");
    assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap()[3], "▁the");
    assert_eq!(f.get_f32_array("tokenizer.ggml.scores").unwrap()[4], -4.125);
    assert_eq!(f.get_i32_array("tokenizer.ggml.token_type").unwrap(), [3, 3, 3, 1, 1, 6, 1]);
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(f.get_u64("test.u64").unwrap(), (1 << 40) + 3);
    assert_eq!(f.get_f32("test.f32").unwrap(), 0.15625);

    let tensors = reference["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    for (t, r) in f.tensors().iter().zip(tensors) {
        assert_eq!(t.name(), r["name"].as_str().unwrap());
        assert_eq!(t.ty().name(), r["type"].as_str().unwrap(), "{}", t.name());
        assert_eq!(u64::from(t.ty().ggml_id()), r["type_id"].as_u64().unwrap());
        let dims: Vec<usize> = r["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.dims(), dims.as_slice(), "{}", t.name());
        assert_eq!(t.elements() as u64, r["n_elements"].as_u64().unwrap());
        assert_eq!(t.size_bytes() as u64, r["n_bytes"].as_u64().unwrap());
        assert_eq!(t.file_offset() as u64, r["data_offset"].as_u64().unwrap());
        assert_eq!(hex(f.tensor_data(t)), r["data_hex"].as_str().unwrap(), "{}", t.name());
    }
    // numpy's (3, 8) float32 array is stored innermost-first.
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.dims(), embd.shape()), (&[8, 3][..], vec![3, 8]));
    let first = f32::from_le_bytes(f.tensor_data(embd)[..4].try_into().unwrap());
    assert_eq!(first, -1.0);
}

/// Opens every `.gguf` in `$METALLIC_GGUF_DIR` (real models, or llama.cpp's `models/ggml-vocab-*`
/// files) and prints a one-line summary of each; run with
/// `METALLIC_GGUF_DIR=... cargo test -p metallic-models --test gguf -- --ignored --nocapture`.
#[test]
#[ignore = "needs real GGUF files in $METALLIC_GGUF_DIR"]
fn real_files_parse() {
    let dir = std::env::var_os("METALLIC_GGUF_DIR").expect("set METALLIC_GGUF_DIR to a folder of .gguf files");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .gguf files in {}", Path::new(&dir).display());
    for path in paths {
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let tokens = f.get_array("tokenizer.ggml.tokens").map(|a| a.len()).unwrap_or(0);
        let merges = f.get_array("tokenizer.ggml.merges").map(|a| a.len()).unwrap_or(0);
        let tensor_bytes: usize = f.tensors().iter().map(|t| t.size_bytes()).sum();
        let offsets: usize = f.tensors().iter().map(|t| t.file_offset()).sum();
        let mut types = std::collections::BTreeMap::new();
        for t in f.tensors() {
            *types.entry(t.ty().name()).or_insert(0) += 1;
        }
        let types: Vec<String> = types.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!(
            "{} v{} kv={} tensors={} tokens={} merges={} alignment={} data_start={} tensor_bytes={} offsets={} types={}",
            path.file_name().unwrap().to_string_lossy(),
            f.version(),
            f.metadata().len(),
            f.tensors().len(),
            tokens,
            merges,
            f.alignment(),
            f.data_start(),
            tensor_bytes,
            offsets,
            types.join(",")
        );
    }
}
