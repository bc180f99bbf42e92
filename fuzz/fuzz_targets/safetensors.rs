//! The sentence-embedding loading path on arbitrary bytes: `config.json` (the bytes before the
//! first NUL) through `BertConfig`, and a safetensors image (the rest) through
//! `SafetensorsFile`, reading every tensor it accepts.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use metallic_models::bert::BertConfig;
use metallic_models::weights::SafetensorsFile;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (json, rest) = data.split_at(split);
    let _ = BertConfig::from_json(&String::from_utf8_lossy(json), Path::new("config.json"));
    let Ok(file) = SafetensorsFile::from_bytes(rest.get(1..).unwrap_or_default().to_vec()) else { return };
    for name in file.names() {
        let Ok(shape) = file.shape(&name).map(<[usize]>::to_vec) else { continue };
        if let Ok(values) = file.read_f32(&name, &shape) {
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}: element count");
        }
    }
});
