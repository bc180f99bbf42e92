//! Chat prompts: the model's own template from `tokenizer.chat_template` (Jinja, rendered with
//! minijinja under an execution budget, since a template is untrusted input), or the
//! architecture's known turn format when the file has none.

use minijinja::{Environment, ErrorKind, Value, context};

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// How a conversation becomes a prompt.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// The file's Jinja template.
    Jinja(String),
    /// Gemma's turn markup (`<start_of_turn>user … <end_of_turn>`), for Gemma files without a
    /// template.
    Gemma,
}

/// Template evaluation steps allowed per render (a hostile template cannot loop forever).
const FUEL: u64 = 2_000_000;

impl ChatTemplate {
    /// The file's template, or the fallback for its architecture (`None` when there is
    /// neither). The flag says whether the fallback was taken.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<(Self, bool)>> {
        if file.get("tokenizer.chat_template").is_some() {
            return Ok(Some((ChatTemplate::Jinja(file.get_str("tokenizer.chat_template")?.to_string()), false)));
        }
        let arch = file.get_str("general.architecture")?;
        Ok(arch.starts_with("gemma").then_some((ChatTemplate::Gemma, true)))
    }

    /// The prompt text for `messages`, ending with the opening of the model's turn when
    /// `add_generation_prompt`. `bos` is the BOS token's text: a template that writes it first
    /// has it removed, because tokenization adds the BOS token itself.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        bos: &str,
        eos: &str,
        add_generation_prompt: bool,
    ) -> Result<String> {
        match self {
            ChatTemplate::Gemma => Ok(gemma(messages, add_generation_prompt)),
            ChatTemplate::Jinja(source) => {
                let mut env = Environment::new();
                env.set_fuel(Some(FUEL));
                env.add_function(
                    "raise_exception",
                    |message: String| -> std::result::Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
                    },
                );
                env.add_template("chat", source).map_err(template_error)?;
                let template = env.get_template("chat").map_err(template_error)?;
                let text = template
                    .render(context! { messages => messages_value(messages), bos_token => bos, eos_token => eos, add_generation_prompt })
                    .map_err(template_error)?;
                Ok(match text.strip_prefix(bos) {
                    Some(rest) if !bos.is_empty() => rest.to_string(),
                    _ => text,
                })
            }
        }
    }
}

/// `messages` as a template sees them: a list of `{role, content}` maps.
fn messages_value(messages: &[ChatMessage]) -> Value {
    let items: Vec<Value> = messages
        .iter()
        .map(|m| Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
        .collect();
    Value::from(items.as_slice())
}

fn template_error(e: minijinja::Error) -> Error {
    Error::InvalidInput(format!("chat template: {e}"))
}

/// Gemma's turns: roles `user` and `model`; a system message joins the first user turn.
fn gemma(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    let mut system: Option<&str> = None;
    for m in messages {
        match m.role.as_str() {
            "system" => system = Some(&m.content),
            role => {
                let role = if role == "assistant" { "model" } else { role };
                out.push_str("<start_of_turn>");
                out.push_str(role);
                out.push('\n');
                if let Some(s) = system.take() {
                    out.push_str(s);
                    out.push_str("\n\n");
                }
                out.push_str(m.content.trim());
                out.push_str("<end_of_turn>\n");
            }
        }
    }
    if add_generation_prompt {
        out.push_str("<start_of_turn>model\n");
    }
    out
}
