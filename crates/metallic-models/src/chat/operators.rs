//! Jinja's operators with their operands checked.
//!
//! minijinja's fuel counts instructions and the data an instruction makes, but not the work
//! inside an operator: a list can hold the same list twice, and doubling it 60 times in a loop
//! costs 60 steps while `~` (which writes it out), `==`, `<`, `in`, a map key and `+` (which
//! copies a chain of 32 additions at once) would each walk or copy 2^60 items. So a chat
//! template is compiled by us rather than by an `Environment` (minijinja's `unstable_machinery`
//! API, pinned to one release), and each of those instructions is replaced by a call of a
//! function registered here, which takes the same operands from the stack and leaves the same
//! result: the function measures list and map operands from above first (at most the output
//! limit, the walk charged to the fuel), refuses what is too large, then does what the
//! instruction did. The function names contain a space, so a template can neither call nor
//! shadow them. The filters and tests that compare or order values (`sort`, `unique`, `min`,
//! `max`, `dictsort`, `groupby`, `eq`, `lt`, `in`, ...) and `loop.changed` are checked the
//! same way, and values written with `{{ }}` go through a formatter that measures them first.
//!
//! A chained comparison (`a < b < c`) compiles to an instruction that leaves two values, which
//! no function call can replace, so a template that has one is refused; llama.cpp's template
//! engine does not chain comparisons either.

use minijinja::machinery::{CompiledTemplate, Instruction, Instructions, TemplateConfig};
use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, State, Value};

use super::{Checked, Style, WALKED, charge, fits, measure, refuse, texts_fit};

/// The function that replaces `~`.
const CONCAT: &str = "metallic ~";
/// The function that replaces `+`.
const ADD: &str = "metallic +";
/// The function that replaces `in`.
const IN: &str = "metallic in";
/// The function that replaces a map literal `{k: v, ...}`.
const MAP: &str = "metallic {}";
/// The function that replaces `loop.changed(...)`.
const CHANGED: &str = "metallic changed";
/// A comparison of two values.
type Comparison = fn(&Value, &Value) -> bool;
/// The functions that replace the comparisons.
const COMPARE: [(&str, Comparison); 6] = [
    ("metallic ==", |a, b| a == b),
    ("metallic !=", |a, b| a != b),
    ("metallic <", |a, b| a < b),
    ("metallic <=", |a, b| a <= b),
    ("metallic >", |a, b| a > b),
    ("metallic >=", |a, b| a >= b),
];

/// The name under which the template is compiled, which errors name.
pub(super) const NAME: &str = "chat";

/// Compiles `source` as minijinja's `Environment` would (default syntax, no auto-escaping),
/// with the checked operators in place of the built-in ones.
pub(super) fn compile(source: &str) -> Checked<CompiledTemplate<'_>> {
    let config = TemplateConfig {
        syntax_config: Default::default(),
        default_auto_escape: std::sync::Arc::new(|_: &str| AutoEscape::None),
    };
    let mut compiled = CompiledTemplate::new(NAME, source, &config)?;
    patch(&mut compiled.instructions)?;
    for block in compiled.blocks.values_mut() {
        patch(block)?;
    }
    Ok(compiled)
}

/// Replaces each operator instruction by a call of its checked function (same operands, same
/// result: instruction indices and jump targets are unchanged).
fn patch(instructions: &mut Instructions<'_>) -> Checked<()> {
    for index in 0u32.. {
        let Some(instruction) = instructions.get_mut(index) else { break };
        let (name, count) = match *instruction {
            Instruction::StringConcat => (CONCAT, Some(2)),
            Instruction::Add => (ADD, Some(2)),
            Instruction::In => (IN, Some(2)),
            Instruction::Eq => (COMPARE[0].0, Some(2)),
            Instruction::Ne => (COMPARE[1].0, Some(2)),
            Instruction::Lt => (COMPARE[2].0, Some(2)),
            Instruction::Lte => (COMPARE[3].0, Some(2)),
            Instruction::Gt => (COMPARE[4].0, Some(2)),
            Instruction::Gte => (COMPARE[5].0, Some(2)),
            Instruction::BuildMap(pairs) => match pairs.checked_mul(2).and_then(|n| u16::try_from(n).ok()) {
                Some(n) => (MAP, Some(n)),
                None => return Err(refuse(format!("a map literal of {pairs} entries"))),
            },
            // The method's receiver is its first argument, as a function's first argument.
            Instruction::CallMethod("changed", count) => (CHANGED, count),
            Instruction::CompareAndPreserve(_) => {
                let line = instructions.get_line(index).unwrap_or(0);
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{NAME}:{line}: chained comparisons (a < b < c) are not supported in chat templates"),
                ));
            }
            _ => continue,
        };
        *instruction = Instruction::CallFunction(name, count);
    }
    Ok(())
}

/// Registers the checked operators, filters and tests and the measuring formatter for a
/// render whose output may be `limit` bytes.
pub(super) fn register(env: &mut Environment<'_>, limit: usize) {
    env.add_function(CONCAT, move |state: &State, left: Value, right: Value| concat(state, &left, &right, limit));
    env.add_function(ADD, move |state: &State, a: Value, b: Value| add(state, a, b, limit));
    env.add_function(IN, move |state: &State, value: Value, container: Value| {
        contains(state, &value, &container, limit)
    });
    for (name, op) in COMPARE {
        env.add_function(name, move |state: &State, a: Value, b: Value| -> Checked<bool> {
            compared(state, &[a.clone(), b.clone()], limit, name.trim_start_matches("metallic "))?;
            Ok(op(&a, &b))
        });
    }
    env.add_function(MAP, move |state: &State, items: Rest<Value>| map(state, &items, limit));
    env.add_function(CHANGED, move |state: &mut State, args: Rest<Value>| -> Checked<Value> {
        let Some((receiver, args)) = args.split_first() else {
            return Err(minijinja::Error::from(ErrorKind::MissingArgument));
        };
        compared(state, args, limit, "loop.changed")?;
        receiver.call_method(state, "changed", args)
    });
    env.set_formatter(move |out, state, value| {
        if value.as_object().is_some() {
            charge(state, measure(value, Style::Debug { pretty: false }, limit, "{{ }}")?.saturating_mul(WALKED))?;
        }
        minijinja::escape_formatter(out, state, value)
    });
    add_comparing_filters(env, limit);
    add_comparing_tests(env, limit);
    // `debug()` writes out the whole context, unmeasured; chat templates have no use for it.
    env.add_function("debug", |_: Rest<Value>| -> Checked<Value> {
        Err(refuse("debug() is not available in chat templates".into()))
    });
}

/// Checks that the list and map operands of a comparison are within `limit` bytes as text,
/// which bounds the items the comparison visits; the walk is charged to the fuel.
fn compared(state: &State, values: &[Value], limit: usize, what: &str) -> Checked<()> {
    charge(state, texts_fit(values, limit, what)?.saturating_mul(WALKED))
}

/// `left ~ right`: both written out, the result within `limit`.
fn concat(state: &State, left: &Value, right: &Value, limit: usize) -> Checked<Value> {
    let walked = texts_fit(&[left.clone(), right.clone()], limit, "~")?;
    charge(state, walked.saturating_mul(WALKED))?;
    if let (Some(l), Some(r)) = (left.as_str(), right.as_str()) {
        fits(l.len().saturating_add(r.len()), limit, "~")?;
        let text = [l, r].concat();
        // minijinja keeps a concatenation of two safe strings safe.
        return Ok(if left.is_safe() && right.is_safe() { Value::from_safe_string(text) } else { Value::from(text) });
    }
    let (l, r) = (text_len(left), text_len(right));
    fits(l.saturating_add(r).saturating_add(walked), limit, "~")?;
    Ok(Value::from(format!("{left}{right}")))
}

/// A value's length as text: a string's own; others are measured by `texts_fit` or short.
fn text_len(value: &Value) -> usize {
    match value.as_str() {
        Some(s) => s.len(),
        None if value.as_object().is_some() => 0,
        None => value.to_string().len(),
    }
}

/// `a + b`, as minijinja adds: numbers, strings, and lists (whose concatenation minijinja may
/// copy) within `limit`.
fn add(state: &State, a: Value, b: Value, limit: usize) -> Checked<Value> {
    let is_list = |v: &Value| matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable);
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        fits(x.len().saturating_add(y.len()), limit, "+")?;
    } else if is_list(&a) && is_list(&b) {
        // A slot is 16 bytes, and the items are made elsewhere (and charged there).
        let items = a.len().unwrap_or(0).saturating_add(b.len().unwrap_or(0));
        fits(items.saturating_mul(16), limit, "+")?;
    }
    // minijinja's `sum` filter computes `start + item` with its `+` for one item that is
    // defined and is not a non-number added to a number; all other cases fail in `+` itself.
    let fails = b.is_undefined() || (a.is_number() && !b.is_number() && b.kind() != ValueKind::Bool);
    if fails {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tried to use + operator on unsupported types {} and {}", a.kind(), b.kind()),
        ));
    }
    let no_kwargs = Kwargs::from_iter(std::iter::empty::<(&str, Value)>());
    minijinja::filters::sum(state, Value::from(vec![b]), None, Some(a), no_kwargs)
}

/// `value in container`: lists and maps measured first.
fn contains(state: &State, value: &Value, container: &Value, limit: usize) -> Checked<bool> {
    compared(state, &[value.clone(), container.clone()], limit, "in")?;
    if container.as_str().is_none() && container.as_object().is_none() && !container.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "cannot perform a containment check on this value",
        ));
    }
    minijinja::tests::is_in(state, value, container)
}

/// A map literal from its keys and values in order (a later key replaces an earlier one), the
/// keys measured first: the map orders them by comparing.
fn map(state: &State, items: &[Value], limit: usize) -> Checked<Value> {
    let keys: Vec<Value> = items.iter().step_by(2).cloned().collect();
    compared(state, &keys, limit, "a map key")?;
    let mut map = std::collections::BTreeMap::new();
    for pair in items.chunks_exact(2) {
        if let [key, value] = pair {
            map.insert(key.clone(), value.clone());
        }
    }
    Ok(Value::from_object(map))
}

/// The filters that compare or order their input's items, checked as the comparisons are.
fn add_comparing_filters(env: &mut Environment<'_>, limit: usize) {
    let filters: [(&'static str, Value); 6] = [
        ("sort", Value::from_function(minijinja::filters::sort)),
        ("unique", Value::from_function(minijinja::filters::unique)),
        ("min", Value::from_function(minijinja::filters::min)),
        ("max", Value::from_function(minijinja::filters::max)),
        ("dictsort", Value::from_function(minijinja::filters::dictsort)),
        ("groupby", Value::from_function(minijinja::filters::groupby)),
    ];
    for (name, original) in filters {
        super::checked_filter(
            env,
            name,
            original,
            move |args| Ok(texts_fit(args, limit, name)?.saturating_mul(WALKED)),
        );
    }
}

/// The tests that compare (`select` and `reject` use them by name too), checked as the
/// comparisons are.
fn add_comparing_tests(env: &mut Environment<'_>, limit: usize) {
    let is_eq = Value::from_function(minijinja::tests::is_eq);
    let is_ne = Value::from_function(minijinja::tests::is_ne);
    let is_lt = Value::from_function(minijinja::tests::is_lt);
    let is_le = Value::from_function(minijinja::tests::is_le);
    let is_gt = Value::from_function(minijinja::tests::is_gt);
    let is_ge = Value::from_function(minijinja::tests::is_ge);
    let tests: [(&'static str, &Value); 15] = [
        ("eq", &is_eq),
        ("equalto", &is_eq),
        ("==", &is_eq),
        ("ne", &is_ne),
        ("!=", &is_ne),
        ("lt", &is_lt),
        ("lessthan", &is_lt),
        ("<", &is_lt),
        ("le", &is_le),
        ("<=", &is_le),
        ("gt", &is_gt),
        ("greaterthan", &is_gt),
        (">", &is_gt),
        ("ge", &is_ge),
        (">=", &is_ge),
    ];
    for (name, original) in tests {
        super::checked_test(env, name, original.clone(), limit);
    }
    super::checked_test(env, "in", Value::from_function(minijinja::tests::is_in), limit);
}
