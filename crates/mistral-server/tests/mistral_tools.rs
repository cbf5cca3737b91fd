//! Tool calls in Mistral's own format: a tiny random model in Mistral's
//! layout beside mistral-common's real `tekken_240911.json`, under protocol
//! v7 (`[TOOL_CALLS][{...}]`), v11 and v13 (`[TOOL_CALLS]name[ARGS]{...}`),
//! served with its prompts built by mistral-common's protocol. The `openai`
//! client's checks of tool_calls_check.py run against it (`--mistral`):
//! prompt ids with tools, calls and results equal mistral-common's
//! `encode_chat_completion` ids (`POST /tokenize`), and the grammar-made
//! calls (named, required, one or several, auto) parse and follow each
//! tool's schema, streamed or not; the round trip and the 400s as for the
//! generic format. Under v13 the forced calls are left out (see below),
//! and `[THINK]...[/THINK]` comes back as `reasoning_content`.

mod common;
#[path = "../../mistral-loader/tests/reference/tiny_native.rs"]
mod tiny_native;

use common::{run_client_check, start_configured, test_env};
use serde_json::{json, Value};

#[test]
fn mistral_models_call_tools_in_their_own_format() {
    let python = test_env::python();
    let tekken = tiny_native::mistral_common_file(&python, "tekken_240911.json");
    // Copies of the file under each protocol version (mistral_chat_ref.py
    // writes them as mistral-common wants them past v7).
    let refs = tempfile::tempdir().expect("tempdir");
    let answer: Value = serde_json::from_str(&tiny_native::run_python(
        test_env::python_module("refs.mistral_chat_ref"),
        Some(
            &json!({"file": tekken, "versions": ["v7", "v11", "v13"], "out_dir": refs.path(),
                "conversations": []}),
        ),
    ))
    .expect("answer");
    for version in answer["versions"].as_array().expect("versions") {
        let file = version["file"].as_str().expect("file");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(file, dir.path().join("tekken.json")).expect("copy tekken.json");
        tiny_native::write_model(dir.path(), 131_072);
        let server = start_configured(|config| {
            config.model.path = dir.path().to_path_buf();
            config.api_key = Some("test-key".to_owned());
        });
        eprintln!("protocol {}", version["version"]);
        // v13's grammar lets a forced call follow [THINK]...[/THINK], which
        // the random model never closes: its forced calls are left out
        // (their layout is v11's).
        let thinking = version["version"] == "v13";
        let mut args = vec!["--mistral", file];
        args.extend(thinking.then_some("--thinking"));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        run_client_check(
            &server,
            "checks.tool_calls_check",
            &args,
            if thinking { 5 } else { 9 },
        );
    }
}
