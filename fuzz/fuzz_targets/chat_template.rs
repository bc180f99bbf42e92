//! Chat-template rendering with a hostile template (the bytes up to the first NUL) and hostile
//! message contents (the rest, split at NULs): it must return, with text or an error, within
//! its fuel — no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metallic_models::chat::{ChatMessage, ChatTemplate};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let template = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let messages: Vec<ChatMessage> = parts
        .take(8)
        .enumerate()
        .map(|(i, p)| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, &String::from_utf8_lossy(p)))
        .collect();
    let _ = ChatTemplate::Jinja(template).render(&messages, "<bos>", "<eos>", true);
    let _ = ChatTemplate::Gemma.render(&messages, "<bos>", "<eos>", true);
});
