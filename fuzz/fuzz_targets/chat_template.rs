//! Chat-template rendering with hostile templates and messages
//! (`metallic_models::fuzzing::chat_template`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = metallic_models::fuzzing::chat_template(data) {
        panic!("{finding}");
    }
});
