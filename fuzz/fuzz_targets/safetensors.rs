//! The sentence-embedding loading path: `config.json` and safetensors images
//! (`metallic_models::fuzzing::safetensors`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = metallic_models::fuzzing::safetensors(data) {
        panic!("{finding}");
    }
});
