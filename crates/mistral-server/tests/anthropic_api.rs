//! Anthropic's Messages API through the official `anthropic` Python client
//! on the real SmolLM2 model: xtask/python/checks/anthropic_check.py checks text
//! (equal to the chat endpoint's answer), the streamed event sequence, stop
//! sequences and `max_tokens`, a forced tool use (whole and streamed) and
//! its tool_result round trip, and errors in Anthropic's shape (see its
//! header).

mod common;

use common::{run_client_check, start};

#[test]
fn the_anthropic_client_gets_messages() {
    let server = start(Some("test-key"), 1 << 20);
    run_client_check(&server, "checks.anthropic_check", &[], 6);
}
