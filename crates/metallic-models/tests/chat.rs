//! Chat templates: Gemma's fallback turn format (as the llama.cpp fixtures' chat prompts write
//! it), Jinja templates rendered with bos handling, and hostile templates failing cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use metallic_models::chat::{ChatMessage, ChatTemplate};

#[test]
fn the_gemma_fallback_matches_the_fixture_prompts() {
    let one = [ChatMessage::new("user", "Write a haiku about the ocean.")];
    assert_eq!(
        ChatTemplate::Gemma.render(&one, "<bos>", "<eos>", true).unwrap(),
        "<start_of_turn>user\nWrite a haiku about the ocean.<end_of_turn>\n<start_of_turn>model\n"
    );
    let turns = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "2+2?"),
    ];
    assert_eq!(
        ChatTemplate::Gemma.render(&turns, "<bos>", "<eos>", false).unwrap(),
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
         <start_of_turn>user\n2+2?<end_of_turn>\n"
    );
}

const CHATML: &str = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                      {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[test]
fn jinja_templates_render_and_a_leading_bos_is_left_to_the_tokenizer() {
    let t = ChatTemplate::Jinja(CHATML.into());
    let text = t.render(&[ChatMessage::new("user", "Hi")], "<s>", "</s>", true).unwrap();
    assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn hostile_templates_are_errors_not_hangs() {
    let cases = [
        ("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "fuel"),
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
        ("{% for m in messages %}", "chat template"),
        ("{{ messages[0].content.nope() }}", "chat template"),
    ];
    for (source, message) in cases {
        let err =
            ChatTemplate::Jinja(source.into()).render(&[ChatMessage::new("user", "x")], "", "", true).unwrap_err();
        assert!(err.to_string().contains(message), "{source}: {err}");
    }
}
