//! The tokenizer's special-token split on vocabularies the input describes, up to 4,096 extra
//! control tokens, against the one-at-a-time reference
//! (`metallic_models::fuzzing::special_tokens`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = metallic_models::fuzzing::special_tokens(data) {
        panic!("{finding}");
    }
});
