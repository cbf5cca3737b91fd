//! Chat templates: minijinja rendering of Hugging Face-style templates.
//! Expected prompts are built here by plain string concatenation of the
//! messages, the definition the templates encode.

use crate::chat::{ChatError, ChatMessage, ChatTemplate, ChatTemplateArgs};

/// A Hugging Face-style template using what HF templates use: slicing,
/// `namespace`, `loop`, `raise_exception`, a Python string method, blocks
/// with trim/lstrip.
const TEMPLATE: &str = "
{%- if messages[0]['role'] == 'system' %}
    {%- set system = messages[0]['content'].strip() %}
    {%- set rest = messages[1:] %}
{%- else %}
    {%- set rest = messages %}
{%- endif %}
{%- set ns = namespace(n=0) %}
{{- bos_token -}}
{% for m in rest %}
    {% if m.role == 'user' %}
{{- '[U' ~ loop.index0 ~ ']' }}{% if system is defined and loop.first %}{{ system }}|{% endif %}{{ m.content -}}
    {% elif m.role == 'assistant' %}
{{- m['content'] + eos_token -}}
    {% else %}
{{- raise_exception('unknown role ' + m.role) }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}<A>{% endif %}";

fn args(add_generation_prompt: bool) -> ChatTemplateArgs {
    ChatTemplateArgs {
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
        add_generation_prompt,
    }
}

#[test]
fn renders_hf_style_template() {
    let t = ChatTemplate::new(TEMPLATE).unwrap();
    let messages = vec![
        ChatMessage::system("  Be nice. "),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello"),
        ChatMessage::user("Again 😀"),
    ];
    let want = format!(
        "<s>[U0]{}|{}{}</s>[U2]{}",
        "Be nice.", messages[1].content, messages[2].content, messages[3].content
    );
    assert_eq!(t.render(&messages, &args(false)).unwrap(), want);
    assert_eq!(t.render(&messages, &args(true)).unwrap(), want + "<A>");
}

#[test]
fn raise_exception_fails_with_the_template_message() {
    let t = ChatTemplate::new(TEMPLATE).unwrap();
    let err = t
        .render(&[ChatMessage::new("tool", "x")], &args(false))
        .unwrap_err();
    assert!(
        matches!(&err, ChatError::Render { message } if message.contains("unknown role tool")),
        "{err}"
    );
}

#[test]
fn invalid_template_is_a_syntax_error() {
    let err = ChatTemplate::new("{% for m in messages %}").unwrap_err();
    assert!(matches!(err, ChatError::Syntax { .. }), "{err}");
}
