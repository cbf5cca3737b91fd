//! Where `load_chat_template` finds a model's template, and its errors.
//! Each case writes a model directory with a known template and checks that
//! exactly that template (recognised by its rendering) is the one used.

mod common;
mod reference;

use common::TempDir;
use mistral_loader::{load_chat_template, load_tokenizer, ChatTemplateSource, LoadError};
use mistral_text::ChatMessage;
use serde_json::{json, Value};

/// A directory with the v0.3 test tokenizer and `config` as tokenizer_config.json.
fn model_dir(tag: &str, config: Option<Value>) -> TempDir {
    let dir = TempDir::new(tag);
    let src = reference::models_dir().join("gqa4_f32/tokenizer.json");
    std::fs::copy(src, dir.path().join("tokenizer.json")).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    }
    dir
}

fn render(dir: &TempDir) -> (String, ChatTemplateSource) {
    let tokenizer = load_tokenizer(dir.path()).unwrap();
    let t = load_chat_template(dir.path(), &tokenizer).unwrap();
    let text = t.render(&[ChatMessage::user("hi")], false).unwrap();
    (text, t.source)
}

#[test]
fn string_template_from_tokenizer_config() {
    let dir = model_dir(
        "string",
        Some(
            json!({"chat_template": "{{ bos_token }}|{{ messages[0].content }}|{{ eos_token }}",
                    "bos_token": {"content": "<B>"}, "eos_token": "<E>"}),
        ),
    );
    let (text, source) = render(&dir);
    assert_eq!(text, "<B>|hi|<E>");
    assert_eq!(
        source,
        ChatTemplateSource::TokenizerConfig(dir.path().join("tokenizer_config.json"))
    );
}

#[test]
fn named_templates_use_default() {
    let dir = model_dir(
        "named",
        Some(json!({"chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "default {{ messages[0].content }}"}]})),
    );
    assert_eq!(render(&dir).0, "default hi");
}

#[test]
fn jinja_file_comes_first() {
    let dir = model_dir("jinja", Some(json!({"chat_template": "config"})));
    let path = dir.path().join("chat_template.jinja");
    std::fs::write(&path, "file {{ messages[0].content }}").unwrap();
    assert_eq!(
        render(&dir),
        ("file hi".into(), ChatTemplateSource::JinjaFile(path))
    );
}

#[test]
fn fallback_without_template_uses_default_tokens() {
    let dir = model_dir("fallback", None);
    let (text, source) = render(&dir);
    assert_eq!(source, ChatTemplateSource::MistralFallback);
    assert!(text.starts_with("<s>[INST]"), "{text:?}");
}

#[test]
fn bad_template_fields_are_errors_naming_the_file() {
    let cases = [
        json!({"chat_template": 3}),
        json!({"chat_template": [{"name": "other", "template": "x"}]}),
        json!({"chat_template": [{"template": "x"}]}),
        json!({"chat_template": "{% if %}"}),
        json!({"chat_template": "x", "bos_token": 1}),
    ];
    for (i, config) in cases.into_iter().enumerate() {
        let dir = model_dir(&format!("bad{i}"), Some(config.clone()));
        let tokenizer = load_tokenizer(dir.path()).unwrap();
        let err = load_chat_template(dir.path(), &tokenizer).unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::InvalidField { .. } | LoadError::ChatTemplate { .. }
            ),
            "{config}: {err}"
        );
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    }
}

#[test]
fn unsupported_role_fails_the_fallback_render() {
    let dir = model_dir("role", None);
    let tokenizer = load_tokenizer(dir.path()).unwrap();
    let t = load_chat_template(dir.path(), &tokenizer).unwrap();
    let err = t
        .render(&[ChatMessage::new("tool", "x")], false)
        .unwrap_err();
    assert!(err.to_string().contains("tool"), "{err}");
}
