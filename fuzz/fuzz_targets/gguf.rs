//! The GGUF reader on arbitrary bytes, then everything built from a file it accepts
//! (`metallic_models::fuzzing::gguf`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = metallic_models::fuzzing::gguf(data) {
        panic!("{finding}");
    }
});
