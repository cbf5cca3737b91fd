//! Tool calls in a chat template's own format: the real SmolLM2 served with
//! `tests/data/hermes_tools.jinja` (a ChatML template that declares the
//! Hermes `<tool_call>` format) or `tests/data/llama3_tools.jinja` (the
//! Llama 3.x JSON format) in place of its own. tool_calls_check.py
//! (`--template`) checks that the server renders conversations with tools,
//! calls and results as transformers' `render_jinja_template` does, and that
//! the grammar-made calls parse and follow each tool's schema (named,
//! required, one or several, auto, streamed), with the round trip and the
//! 400s, as for the generic format.

mod common;

use common::{run_client_check, start_configured};

/// Serves SmolLM2 with `tests/data/<name>` and runs the checks.
fn check_template(name: &str) {
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let server = start_configured(|config| {
        config.model.chat_template = Some(template.clone());
        config.api_key = Some("test-key".to_owned());
    });
    let args = [std::ffi::OsStr::new("--template"), template.as_os_str()];
    run_client_check(&server, "checks.tool_calls_check", &args, 9);
}

#[test]
fn a_hermes_template_gets_calls_in_its_format() {
    check_template("hermes_tools.jinja");
}

#[test]
fn a_llama3_template_gets_calls_in_its_format() {
    check_template("llama3_tools.jinja");
}
