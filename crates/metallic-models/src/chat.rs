//! Chat prompts: the model's own template from `tokenizer.chat_template` (Jinja, rendered with
//! minijinja under an execution budget and size limits, since a template is untrusted input),
//! or the architecture's known turn format when the file has none.
//!
//! A Jinja render is bounded four ways:
//! - **Steps** ([`FUEL`]): minijinja's fuel, which counts instructions and also the data
//!   operators create and the text written (one fuel per 64 bytes, about 128 MB in all),
//!   refusing a sized allocation such as `'x' * n` before making it when the fuel left cannot
//!   pay for it.
//! - **Output** ([`output_limit`]): 1 MiB plus 8 bytes per byte of the messages; a render that
//!   writes more is an error (while it runs, the fuel bounds what it writes).
//! - **Filters**: every filter that can make a string larger than its input (`tojson`,
//!   `indent`, `pprint`, `string`, `join`, `format`, `replace`, `sum`, and the string filters
//!   when given a list or map) is checked before it runs: widths (`tojson` and `indent`) are
//!   at most [`MAX_INDENT`], and the result's size, estimated from above by walking the value
//!   (at most [`MAX_DEPTH`] levels), must fit in the output limit.
//! - **Operators**: `~`, `+`, the comparisons, `in`, map literals, the filters and tests that
//!   compare, `loop.changed` and `{{ }}` measure list and map operands the same way before
//!   walking or copying them (`operators`: the template is compiled with those instructions
//!   replaced by checked functions, since minijinja's fuel does not see inside them).
//!
//! Each check fails with an [`Error::InvalidInput`] that starts with "chat template:" and names
//! the limit.

use std::borrow::Cow;

use minijinja::machinery;
use minijinja::value::{ObjectRepr, Rest, ValueKind, ValueOrKwargs};
use minijinja::{AutoEscape, Environment, ErrorKind, State, Value, context};

mod operators;

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Template evaluation steps allowed per render (a hostile template cannot loop forever). The
/// same budget pays for the data operators create, one step per 64 bytes: about 128 MB in all.
pub const FUEL: u64 = 2_000_000;

/// The fixed part of the output limit: 1 MiB, far more than any template's markup.
const OUTPUT_BASE: usize = 1 << 20;

/// Output allowed per byte of the messages' roles and contents: a template writes each message
/// once, or a few times (JSON escaping can make a byte six).
const OUTPUT_PER_MESSAGE_BYTE: usize = 8;

/// The widest indentation `tojson` and `indent` accept (templates use 2 or 4).
pub const MAX_INDENT: usize = 64;

/// The deepest nesting of lists and maps a filter accepts to turn into text (the messages are
/// two levels deep).
pub const MAX_DEPTH: usize = 64;

/// The most bytes a Jinja template may render for `messages`: 1 MiB plus 8 bytes per byte of
/// their roles and contents. It also bounds every string a filter makes.
pub fn output_limit(messages: &[ChatMessage]) -> usize {
    let bytes = messages.iter().map(|m| m.role.len().saturating_add(m.content.len())).fold(0, usize::saturating_add);
    OUTPUT_BASE.saturating_add(bytes.saturating_mul(OUTPUT_PER_MESSAGE_BYTE))
}

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
    /// has it removed, because tokenization adds the BOS token itself. A Jinja template fails
    /// when it runs out of steps, would write more than [`output_limit`] bytes, or asks a
    /// filter for more (see the module docs). [`render_with`](Self::render_with) says more.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        bos: &str,
        eos: &str,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let options = RenderOptions { bos, eos, strip_bos: true, continue_final: false };
        self.render_with(messages, &options, add_generation_prompt)
    }

    /// [`render`](Self::render) with the tokenizer's facts: the leading BOS text is removed only
    /// when `options.strip_bos` (the tokenizer adds BOS itself), as llama.cpp does. With
    /// `options.continue_final`, a conversation that ends with an assistant message is
    /// continued, as llama-server's assistant prefill does: the turns before it with the
    /// opening of the model's turn, then that message's text, unterminated
    /// (`add_generation_prompt` is then moot).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions<'_>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        if let Some((last, before)) = messages.split_last()
            && options.continue_final
            && last.role == "assistant"
            && !before.is_empty()
        {
            let mut text = self.render_with(before, options, true)?;
            text.push_str(&last.content);
            return Ok(text);
        }
        let RenderOptions { bos, eos, strip_bos, .. } = *options;
        match self {
            ChatTemplate::Gemma => Ok(gemma(messages, add_generation_prompt)),
            ChatTemplate::Jinja(source) => {
                // On a thread of its own with a large stack: values a template nests deeply
                // (as deep as the fuel allows) are dropped recursively.
                let text = std::thread::scope(|scope| {
                    std::thread::Builder::new()
                        .name("chat-template".into())
                        .stack_size(RENDER_STACK)
                        .spawn_scoped(scope, || render_jinja(source, messages, bos, eos, add_generation_prompt))
                        .map_err(|e| Error::InvalidInput(format!("chat template: cannot start its thread: {e}")))?
                        .join()
                        .map_err(|_| Error::InvalidInput("chat template: the render failed".into()))?
                })?;
                Ok(match text.strip_prefix(bos) {
                    Some(rest) if strip_bos && !bos.is_empty() => rest.to_string(),
                    _ => text,
                })
            }
        }
    }
}

/// How [`ChatTemplate::render_with`] renders: the special-token texts a template sees, whether
/// the leading BOS text is removed, whether a final assistant message is continued.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions<'a> {
    /// `bos_token`.
    pub bos: &'a str,
    /// `eos_token`.
    pub eos: &'a str,
    /// Remove a leading `bos` from the output (the tokenizer adds the BOS token itself).
    pub strip_bos: bool,
    /// Continue a final assistant message instead of closing it (llama-server's default).
    pub continue_final: bool,
}

/// Stack of the thread a Jinja template renders on (reserved address space; only what is used
/// is backed by memory).
const RENDER_STACK: usize = 256 << 20;

/// Renders a Jinja chat template within the step, output, filter and operator bounds (module
/// docs).
fn render_jinja(
    source: &str,
    messages: &[ChatMessage],
    bos: &str,
    eos: &str,
    add_generation_prompt: bool,
) -> Result<String> {
    let limit = output_limit(messages);
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    add_bounded_filters(&mut env, limit);
    operators::register(&mut env, limit);
    env.add_function("raise_exception", move |message: Value| -> std::result::Result<String, minijinja::Error> {
        let message = bounded_text(&message, limit, "raise_exception")?;
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.into_owned()))
    });
    let template = operators::compile(source).map_err(template_error)?;
    let root =
        context! { messages => messages_value(messages), bos_token => bos, eos_token => eos, add_generation_prompt };
    let mut text = String::new();
    let rendered = machinery::eval(
        &env,
        &template.instructions,
        root,
        &template.blocks,
        &mut machinery::make_string_output(&mut text),
        AutoEscape::None,
    );
    drop(rendered.map_err(template_error)?);
    if text.len() > limit {
        return Err(Error::InvalidInput(format!("chat template: rendered output exceeds {limit} bytes")));
    }
    Ok(text)
}

type Checked<T> = std::result::Result<T, minijinja::Error>;

/// A refusal from a filter check; minijinja adds the template's name and line.
fn refuse(message: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message)
}

/// Replaces minijinja's filters that can make strings larger than their input with checked
/// ones, which call the built-in filter after the check (`replace` is reimplemented, as the
/// built-in one that takes a count is not public).
fn add_bounded_filters(env: &mut Environment<'_>, limit: usize) {
    // Filters that turn their arguments into text: a list or map argument must fit.
    let text_filters: [(&'static str, Value); 13] = [
        ("upper", Value::from_function(minijinja::filters::upper)),
        ("lower", Value::from_function(minijinja::filters::lower)),
        ("title", Value::from_function(minijinja::filters::title)),
        ("capitalize", Value::from_function(minijinja::filters::capitalize)),
        ("trim", Value::from_function(minijinja::filters::trim)),
        ("split", Value::from_function(minijinja::filters::split)),
        ("lines", Value::from_function(minijinja::filters::lines)),
        ("escape", Value::from_function(minijinja::filters::escape)),
        ("e", Value::from_function(minijinja::filters::escape)),
        ("safe", Value::from_function(minijinja::filters::safe)),
        ("string", Value::from_function(minijinja::filters::string)),
        ("int", Value::from_function(minijinja::filters::int)),
        ("float", Value::from_function(minijinja::filters::float)),
    ];
    for (name, original) in text_filters {
        checked_filter(env, name, original, move |args| Ok(texts_fit(args, limit, name)?.saturating_mul(WALKED)));
    }
    checked_filter(env, "tojson", Value::from_function(minijinja::filters::tojson), move |args| {
        Ok(check_tojson(args, limit)?.saturating_mul(WALKED))
    });
    checked_filter(env, "pprint", Value::from_function(minijinja::filters::pprint), move |args| {
        let value = args.first().unwrap_or(&Value::UNDEFINED);
        Ok(measure(value, Style::Debug { pretty: true }, limit, "pprint")?.saturating_mul(WALKED))
    });
    checked_filter(env, "indent", Value::from_function(minijinja::filters::indent), move |args| {
        check_indent(args, limit)
    });
    checked_filter(env, "join", Value::from_function(minijinja::filters::join), move |args| check_join(args, limit));
    checked_filter(env, "format", Value::from_function(minijinja::filters::format), move |args| {
        check_format(args, limit)
    });
    checked_filter(env, "sum", Value::from_function(minijinja::filters::sum), move |args| check_sum(args, limit));
    env.add_filter("replace", move |state: &State, args: Rest<ValueOrKwargs>| {
        replace(state, &args.into_values(), limit)
    });
    for (name, original) in [
        ("startingwith", Value::from_function(minijinja::tests::is_startingwith)),
        ("endingwith", Value::from_function(minijinja::tests::is_endingwith)),
    ] {
        checked_test(env, name, original, limit);
    }
}

/// Registers `original` as test `name`, its list and map arguments measured first (within
/// `limit` bytes as text, the walk charged to the fuel).
fn checked_test(env: &mut Environment<'_>, name: &'static str, original: Value, limit: usize) {
    env.add_test(name, move |state: &mut State, args: Rest<ValueOrKwargs>| -> Checked<Value> {
        let args = args.into_values();
        charge(state, texts_fit(&args, limit, name)?.saturating_mul(WALKED))?;
        original.call(state, &args)
    });
}

/// Registers `original` as filter `name`, running `check` on its arguments first. A check
/// returns the work it did, in minijinja's fuel units, which is charged to the fuel (see
/// [`charge`]).
fn checked_filter(
    env: &mut Environment<'_>,
    name: &'static str,
    original: Value,
    check: impl Fn(&[Value]) -> Checked<usize> + Send + Sync + 'static,
) {
    env.add_filter(name, move |state: &mut State, args: Rest<ValueOrKwargs>| -> Checked<Value> {
        let args = args.into_values();
        charge(state, check(&args)?)?;
        original.call(state, &args)
    });
}

/// Charges a check's work to the fuel, so that a template cannot make the checks themselves
/// take long by calling them in a loop. The work is counted in minijinja's units: 64 to a step,
/// one per byte of a string measured, [`WALKED`] per byte of a list or map walked.
fn charge(state: &State, units: usize) -> Checked<()> {
    state.consume_fuel(u64::try_from(units / 64).unwrap_or(u64::MAX))
}

/// The fuel units charged per byte of a list or map walked to estimate its text: minijinja's
/// own rate for turning a list into text.
const WALKED: usize = 16;

/// The `index`th positional argument, or else the keyword argument `key`.
fn argument(args: &[Value], index: usize, key: &str) -> Option<Value> {
    let (kwargs, positional) = match args.split_last() {
        Some((last, rest)) if last.is_kwargs() => (Some(last), rest),
        _ => (None, args),
    };
    if let Some(value) = positional.get(index) {
        return Some(value.clone());
    }
    let value = kwargs?.get_attr(key).ok()?;
    (!value.is_undefined()).then_some(value)
}

/// An integer argument, wide enough for anything a template can write.
fn integer(value: &Value) -> Option<i128> {
    if value.kind() != ValueKind::Number {
        return None;
    }
    i128::try_from(value.clone()).ok()
}

/// `value` as a filter turns it into text (its `Display`), after checking that a list or map
/// would not exceed `limit` bytes.
fn bounded_text<'a>(value: &'a Value, limit: usize, what: &str) -> Checked<Cow<'a, str>> {
    if let Some(s) = value.as_str() {
        return Ok(Cow::Borrowed(s));
    }
    measure(value, Style::Debug { pretty: false }, limit, what)?;
    Ok(Cow::Owned(value.to_string()))
}

/// The length of `value` as text: a string's own, an upper bound for anything else, which
/// must not exceed `limit`.
fn text_len(value: &Value, limit: usize, what: &str) -> Checked<usize> {
    match value.as_str() {
        Some(s) => Ok(s.len()),
        None => measure(value, Style::Debug { pretty: false }, limit, what),
    }
}

/// Checks that every argument fits as text; the bytes measured.
fn texts_fit(args: &[Value], limit: usize, what: &str) -> Checked<usize> {
    let mut total = 0usize;
    for arg in args {
        if arg.as_object().is_some() {
            total = total.saturating_add(measure(arg, Style::Debug { pretty: false }, limit, what)?);
        }
    }
    Ok(total)
}

/// `tojson(value, indent)`: the indent at most [`MAX_INDENT`], the JSON within `limit`.
fn check_tojson(args: &[Value], limit: usize) -> Checked<usize> {
    let indent = match argument(args, 1, "indent") {
        None => 0,
        // `true` is minijinja's default of 2.
        Some(v) if v.kind() == ValueKind::Bool => usize::from(v.is_true()) * 2,
        Some(v) => match integer(&v) {
            Some(n) if n > MAX_INDENT as i128 => return Err(refuse(format!("tojson indent {n} exceeds {MAX_INDENT}"))),
            Some(n) => usize::try_from(n).unwrap_or(0),
            // Not a number: the filter itself says what is wrong.
            None => 0,
        },
    };
    measure(args.first().unwrap_or(&Value::UNDEFINED), Style::Json { indent }, limit, "tojson")
}

/// `indent(value, width)`: the width at most [`MAX_INDENT`], the result within `limit`.
fn check_indent(args: &[Value], limit: usize) -> Checked<usize> {
    let width = match argument(args, 1, "width").as_ref().and_then(integer) {
        Some(n) if n > MAX_INDENT as i128 => return Err(refuse(format!("indent width {n} exceeds {MAX_INDENT}"))),
        Some(n) => usize::try_from(n).unwrap_or(0),
        None => 4,
    };
    let text = bounded_text(args.first().unwrap_or(&Value::UNDEFINED), limit, "indent")?;
    let lines = text.bytes().filter(|&b| b == b'\n').count().saturating_add(1);
    fits(text.len().saturating_add(lines.saturating_mul(width)), limit, "indent")
}

/// `join(value, d, attribute)`: the items' text and the separators within `limit`.
fn check_join(args: &[Value], limit: usize) -> Checked<usize> {
    let value = args.first().unwrap_or(&Value::UNDEFINED);
    let d = match argument(args, 1, "d") {
        Some(d) => text_len(&d, limit, "join")?,
        None => 0,
    };
    if let Some(s) = value.as_str() {
        // Joining a string's characters puts a separator after each.
        return fits(s.chars().count().saturating_mul(d).saturating_add(s.len()), limit, "join");
    }
    let attribute = argument(args, 2, "attribute");
    let attribute = attribute.as_ref().and_then(Value::as_str);
    let Ok(items) = value.try_iter() else { return Ok(0) };
    let mut size = 0usize;
    for item in items {
        let item = match attribute {
            Some(path) => attribute_of(&item, path),
            None => item,
        };
        // Every item counts at least one byte, so that a long list of empty strings is
        // refused too instead of taking long.
        let text = text_len(&item, limit, "join")?.max(1);
        size = fits(size.saturating_add(text).saturating_add(d), limit, "join")?;
    }
    Ok(size)
}

/// `format(format_string, args...)`: the format string, every argument's text and every
/// width and precision within `limit`.
fn check_format(args: &[Value], limit: usize) -> Checked<usize> {
    let Some((format, rest)) = args.split_first() else { return Ok(0) };
    let Some(format) = format.as_str() else { return Ok(0) };
    let mut size = fits(format.len().saturating_add(format_widths(format)), limit, "format")?;
    for arg in rest {
        size = fits(size.saturating_add(text_len(arg, limit, "format")?), limit, "format")?;
    }
    Ok(size)
}

/// The sum of the widths and precisions of a printf-style format string's conversions
/// (`%10.3f` adds 13): what they can add to the output beyond the arguments' text.
fn format_widths(format: &str) -> usize {
    let mut total = 0usize;
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        rest = rest.get(at + 1..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix('(') {
            rest = after.find(')').and_then(|end| after.get(end + 1..)).unwrap_or_default();
        }
        rest = rest.trim_start_matches(['-', '+', ' ', '#', '0']);
        // The width, then the precision after a dot.
        for _ in 0..2 {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let number = rest.get(..digits).unwrap_or_default();
            let value = if number.len() > 18 { usize::MAX } else { number.parse().unwrap_or(0) };
            total = total.saturating_add(value);
            rest = rest.get(digits..).unwrap_or_default();
            match rest.strip_prefix('.') {
                Some(after) => rest = after,
                None => break,
            }
        }
    }
    total
}

/// `sum(values, attribute, start)` of strings or lists: each addition copies what was summed
/// so far, so the result must fit in `limit` and the copying in 16 times that. Sums of numbers
/// (no `start`, or a number) are not checked.
fn check_sum(args: &[Value], limit: usize) -> Checked<usize> {
    let start = argument(args, 2, "start");
    if start.as_ref().is_none_or(|s| s.kind() == ValueKind::Number) {
        return Ok(0);
    }
    let size_of = |v: &Value| v.as_str().map(str::len).or_else(|| v.len()).unwrap_or(0).max(1);
    let mut size = start.as_ref().map_or(0, size_of);
    let mut copied = 0usize;
    let attribute = argument(args, 1, "attribute");
    let attribute = attribute.as_ref().and_then(Value::as_str);
    let Ok(items) = args.first().unwrap_or(&Value::UNDEFINED).try_iter() else { return Ok(0) };
    for item in items {
        let item = match attribute {
            Some(path) => attribute_of(&item, path),
            None => item,
        };
        size = fits(size.saturating_add(size_of(&item)), limit, "sum")?;
        copied = copied.saturating_add(size);
        if copied > limit.saturating_mul(16) {
            return Err(refuse(format!(
                "sum would copy more than {} bytes, 16 times the chat template output limit",
                limit.saturating_mul(16)
            )));
        }
    }
    Ok(copied)
}

/// `replace(value, old, new, count)`, minijinja's filter with the result's size checked before
/// it is made (the template runs without auto-escaping, so there is no markup to keep safe).
fn replace(state: &State, args: &[Value], limit: usize) -> Checked<Value> {
    let text = |i: usize| -> Checked<Cow<'_, str>> {
        match args.get(i) {
            Some(v) if !v.is_kwargs() => bounded_text(v, limit, "replace"),
            _ => Err(minijinja::Error::from(ErrorKind::MissingArgument)),
        }
    };
    let (value, from, to) = (text(0)?, text(1)?, text(2)?);
    if let Some(kwargs) = args.last().filter(|v| v.is_kwargs())
        && let Some(key) = kwargs.try_iter()?.find(|key| key.as_str() != Some("count"))
    {
        return Err(minijinja::Error::new(ErrorKind::TooManyArguments, format!("unknown keyword argument {key}")));
    }
    if args.iter().filter(|v| !v.is_kwargs()).count() > 4 {
        return Err(minijinja::Error::from(ErrorKind::TooManyArguments));
    }
    // A negative count replaces every occurrence.
    let count = match argument(args, 3, "count") {
        None => usize::MAX,
        Some(v) => match integer(&v) {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => return Err(refuse(format!("replace count {v} is not an integer"))),
        },
    };
    charge(state, value.len())?;
    if to.len() > from.len() {
        let matches = value.matches(from.as_ref()).take(count).count();
        fits(value.len().saturating_add(matches.saturating_mul(to.len() - from.len())), limit, "replace")?;
    }
    Ok(Value::from(value.replacen(from.as_ref(), &to, count)))
}

/// `item`'s attribute at a dotted `path` (`a.b.0`), as minijinja's filters look them up;
/// undefined where there is none.
fn attribute_of(item: &Value, path: &str) -> Value {
    let mut value = item.clone();
    for part in path.split('.') {
        let next = match part.parse::<i64>() {
            Ok(index) => value.get_item(&Value::from(index)),
            Err(_) => value.get_attr(part),
        };
        value = next.unwrap_or(Value::UNDEFINED);
    }
    value
}

/// `size`, or an error when it exceeds `limit`.
fn fits(size: usize, limit: usize, what: &str) -> Checked<usize> {
    if size > limit {
        Err(refuse(format!("{what} would make more than {limit} bytes, the chat template output limit")))
    } else {
        Ok(size)
    }
}

/// How a value is turned into text.
#[derive(Clone, Copy)]
enum Style {
    /// minijinja's JSON, indented by this many spaces per level (0: on one line).
    Json { indent: usize },
    /// Rust's `Debug` (which minijinja's `Display` of lists and maps uses for their items);
    /// `pretty` indents by 4 per level.
    Debug { pretty: bool },
}

/// An upper bound on the size of `value` as text in `style`, or an error when it could exceed
/// `limit` bytes or is nested deeper than [`MAX_DEPTH`]. The walk stops as soon as the bound
/// exceeds the limit, so it takes time proportional to the limit at most, even for a list
/// that holds the same list many times over.
fn measure(value: &Value, style: Style, limit: usize, what: &str) -> Checked<usize> {
    let mut m = Measure { style, limit, used: 0 };
    match m.value(value, 0) {
        Ok(()) => Ok(m.used),
        Err(TooLarge::Size) => fits(usize::MAX, limit, what),
        Err(TooLarge::Depth) => Err(refuse(format!("{what}: a value nested deeper than {MAX_DEPTH} levels"))),
    }
}

enum TooLarge {
    Size,
    Depth,
}

struct Measure {
    style: Style,
    limit: usize,
    used: usize,
}

impl Measure {
    fn add(&mut self, n: usize) -> std::result::Result<(), TooLarge> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit { Err(TooLarge::Size) } else { Ok(()) }
    }

    /// Spaces before an item at `depth`.
    fn indent(&self, depth: usize) -> usize {
        match self.style {
            Style::Json { indent } => indent.saturating_mul(depth),
            Style::Debug { pretty: true } => depth.saturating_mul(4),
            Style::Debug { pretty: false } => 0,
        }
    }

    fn value(&mut self, value: &Value, depth: usize) -> std::result::Result<(), TooLarge> {
        if depth > MAX_DEPTH {
            return Err(TooLarge::Depth);
        }
        if let Some(s) = value.as_str() {
            return self.string(s);
        }
        if let Some(bytes) = value.as_bytes() {
            // Up to three digits and a separator per byte in JSON, an escape in `Debug`.
            return self.add(bytes.len().saturating_mul(6).saturating_add(2));
        }
        let Some(object) = value.as_object() else {
            // Numbers, booleans, none, undefined: short; "undefined" is the longest word.
            return self.add(value.to_string().len().saturating_add(16));
        };
        // Brackets, and the newline and indentation before the closing one.
        self.add(3usize.saturating_add(self.indent(depth)))?;
        // A separator, a newline and the indentation before each item.
        let item = 3usize.saturating_add(self.indent(depth.saturating_add(1)));
        match object.repr() {
            ObjectRepr::Map => {
                for (key, v) in object.try_iter_pairs().into_iter().flatten() {
                    self.add(item.saturating_add(2))?;
                    self.value(&key, depth + 1)?;
                    self.value(&v, depth + 1)?;
                }
                Ok(())
            }
            ObjectRepr::Seq | ObjectRepr::Iterable => {
                for v in object.try_iter().into_iter().flatten() {
                    self.add(item)?;
                    self.value(&v, depth + 1)?;
                }
                Ok(())
            }
            // Functions, macros, the loop: a short description.
            _ => self.add(value.to_string().len()),
        }
    }

    /// A quoted string: each character as JSON or `Debug` escapes it, whichever is longer.
    fn string(&mut self, s: &str) -> std::result::Result<(), TooLarge> {
        self.add(2)?;
        for c in s.chars() {
            let json = match c {
                '"' | '\\' => 2,
                '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\'' | '\u{2028}' | '\u{2029}' => 6,
                c => c.len_utf8(),
            };
            self.add(json.max(c.escape_debug().len()))?;
        }
        Ok(())
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
    if e.kind() == ErrorKind::OutOfFuel {
        return Error::InvalidInput(format!(
            "chat template: {e}: it may take {FUEL} steps and create about {} MB of data",
            FUEL * 64 / 1_000_000
        ));
    }
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
