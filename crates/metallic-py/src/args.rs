//! Reading Python arguments, with `ArgumentTypeError` / `InvalidArgumentError` for what does
//! not fit (PyO3's own conversion errors would be plain `TypeError`s outside the hierarchy).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyMapping, PyString};

use crate::errors::{Kind, model_error};

/// Python's name for the type of `obj`.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// `obj` as a Rust string; `what` names the argument in the message.
pub fn text(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if !obj.is_instance_of::<PyString>() {
        return Err(Kind::ArgumentType.err(format!("{what} must be str, not {}", type_name(obj))));
    }
    obj.extract::<String>().map_err(|e| Kind::InvalidArgument.err(format!("{what} is not valid Unicode text: {e}")))
}

/// A `str` as one text (`true`), or any other iterable of `str` as several (`false`).
pub fn one_or_many_texts(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<String>, bool)> {
    if obj.is_instance_of::<PyString>() {
        return Ok((vec![text(obj, what)?], true));
    }
    let Ok(items) = obj.try_iter() else {
        return Err(Kind::ArgumentType.err(format!("{what} must be str or a list of str, not {}", type_name(obj))));
    };
    let mut texts = Vec::new();
    for (i, item) in items.enumerate() {
        texts.push(text(&item?, &format!("{what}[{i}]"))?);
    }
    Ok((texts, false))
}

/// An optional list of stop strings (`None` or a single `str` are accepted too).
pub fn stop_strings(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match obj {
        None => Ok(Vec::new()),
        Some(obj) if obj.is_none() => Ok(Vec::new()),
        Some(obj) => Ok(one_or_many_texts(obj, "stop")?.0),
    }
}

/// An iterable of token ids, each checked against `vocab` ids.
pub fn token_ids(obj: &Bound<'_, PyAny>, what: &str, vocab: usize) -> PyResult<Vec<u32>> {
    if obj.is_instance_of::<PyString>() {
        return Err(Kind::ArgumentType.err(format!("{what} must be a list of int token ids, not str")));
    }
    let Ok(items) = obj.try_iter() else {
        return Err(Kind::ArgumentType.err(format!("{what} must be a list of int token ids, not {}", type_name(obj))));
    };
    let mut ids = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        let Ok(id) = item.extract::<i128>() else {
            return Err(Kind::ArgumentType.err(format!("{what}[{i}] must be an int, not {}", type_name(&item))));
        };
        match u32::try_from(id) {
            Ok(id) if (id as usize) < vocab => ids.push(id),
            _ => {
                return Err(Kind::InvalidArgument.err(format!(
                    "{what}[{i}] is {id}, not a token id of this model (0 to {})",
                    vocab.saturating_sub(1)
                )));
            }
        }
    }
    Ok(ids)
}

/// A count that must not be negative.
pub fn count(value: i64, what: &str) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| Kind::InvalidArgument.err(format!("{what} must be >= 0, got {value}")))
}

/// A chat conversation: a list of `{"role": ..., "content": ...}` mappings.
pub fn messages(obj: &Bound<'_, PyAny>) -> PyResult<Vec<metallic_models::chat::ChatMessage>> {
    let bad = || {
        Kind::ArgumentType.err(format!(
            "messages must be a list of {{\"role\": str, \"content\": str}} dicts, not {}",
            type_name(obj)
        ))
    };
    if obj.is_instance_of::<PyString>() {
        return Err(bad());
    }
    let items = obj.try_iter().map_err(|_| bad())?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        let Ok(map) = item.cast::<PyMapping>() else {
            return Err(Kind::ArgumentType
                .err(format!("messages[{i}] must be a dict with \"role\" and \"content\", not {}", type_name(&item))));
        };
        let field = |key: &str| -> PyResult<String> {
            match map.get_item(key) {
                Ok(value) => text(&value, &format!("messages[{i}][{key:?}]")),
                Err(_) => Err(Kind::InvalidArgument.err(format!("messages[{i}] has no {key:?}"))),
            }
        };
        out.push(metallic_models::chat::ChatMessage { role: field("role")?, content: field("content")? });
    }
    Ok(out)
}

/// `path` if it exists; otherwise the `ModelNotFoundError` the engine would give for a file
/// that cannot be opened (a directory that does not exist is otherwise reported as "not a
/// model directory").
pub fn existing(path: PathBuf) -> PyResult<PathBuf> {
    match std::fs::metadata(&path) {
        Ok(_) => Ok(path),
        Err(source) => Err(model_error(metallic_models::Error::Io { path, source })),
    }
}

/// A filesystem path: `str` or `os.PathLike`.
pub fn path(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    obj.extract::<PathBuf>()
        .map_err(|_| Kind::ArgumentType.err(format!("path must be str or os.PathLike, not {}", type_name(obj))))
}
