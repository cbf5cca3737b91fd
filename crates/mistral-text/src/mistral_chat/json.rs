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
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    String::from_utf8_lossy(&out).into_owned()
}

/// Python's default JSON separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        writer.write_all(python_float(value).as_bytes())
    }
}

/// `repr(value)` as Python writes a float: the shortest digits that read
/// back, positional from 1e-4 up to 1e16 (with `.0` when whole), else
/// `d.ddde±XX`.
pub(super) fn python_float(value: f64) -> String {
    let sci = format!("{:e}", value.abs()); // shortest digits, `d.ddde-5`
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let whole = exp as usize + 1;
    if digits.len() <= whole {
        let zeros = "0".repeat(whole - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        format!("{sign}{}.{}", &digits[..whole], &digits[whole..])
    }
}

/// `", "` before every item of a list or an object but the first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}
