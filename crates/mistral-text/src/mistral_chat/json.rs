//! JSON as mistral-common writes it into prompts: Python's
//! `json.dumps(..., ensure_ascii=False)` layout, keys in the order given.

use serde_json::{json, Map, Value};

use super::{invalid, Result};

/// A tool as mistral-common dumps it: `type`, then the function's `name`,
/// `description` (default empty) and `parameters`.
pub(super) fn tool_json(tool: &Value) -> Result<Value> {
    let (function, name) = named_function(tool, "a tool")?;
    let parameters = function
        .get("parameters")
        .cloned()
        .ok_or_else(|| invalid(format!("tool {name:?} needs parameters")))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    f.insert(
        "description".into(),
        function.get("description").cloned().unwrap_or(json!("")),
    );
    f.insert("parameters".into(), parameters);
    let mut t = Map::new();
    t.insert("type".into(), json!("function"));
    t.insert("function".into(), Value::Object(f));
    Ok(Value::Object(t))
}

/// The `function` object of a tool or tool call (`what`, for errors) and
/// its `name`.
pub(super) fn named_function<'a>(value: &'a Value, what: &str) -> Result<(&'a Value, &'a str)> {
    let function = value
        .get("function")
        .ok_or_else(|| invalid(format!("{what} needs a function")))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}'s function needs a name")))?;
    Ok((function, name))
}

/// JSON text re-serialized (empty -> `{}`); text that is not JSON stays.
pub(super) fn normalize_json(text: &str) -> String {
    if text.is_empty() {
        return "{}".to_owned();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => dumps(&v),
        Err(_) => text.to_owned(),
    }
}

/// Parsed JSON, or the text itself as a string.
pub(super) fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `json.dumps(value, ensure_ascii=False)`.
pub(super) fn dumps(value: &Value) -> String {
    crate::python_json::dumps(value, None)
}
