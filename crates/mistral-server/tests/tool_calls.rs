//! Tool calls through the official `openai` Python client on the real
//! SmolLM2 model (the generic JSON tool format, its template having none):
//! xtask/python/checks/tool_calls_check.py checks named, required and auto tool
//! choices, streamed deltas against the whole answer, one call when
//! parallel calls are off, a tool result round trip, and the 400s (see its
//! header).

mod common;

use common::{run_client_check, start};

#[test]
fn the_openai_client_gets_valid_tool_calls() {
    let server = start(Some("test-key"), 1 << 20);
    run_client_check(&server, "checks.tool_calls_check", &[], 8);
}
