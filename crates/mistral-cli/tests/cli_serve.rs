//! `mistral-cli serve` as a supervisor sees it, with the real SmolLM2: an
//! engine that dies makes the process exit non-zero with the reason; a
//! shutdown signal waits for the grace period and a second one exits at
//! once.

mod common;

#[path = "../../mistral-loader/tests/reference/test_env.rs"]
mod test_env;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `serve` on a free port with `extra` arguments, once `/health` is 200.
fn serve(extra: &[&str]) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let model = test_env::smollm2_path().display().to_string();
    let mut args = vec!["serve", "--model", &model];
    let port_text = port.to_string();
    args.extend(["--port", &port_text]);
    args.extend(extra);
    let mut child = common::cli_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mistral-cli serve");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !request(port, "GET /health", "").starts_with("HTTP/1.1 200") {
        assert!(child.try_wait().expect("wait").is_none(), "serve exited");
        assert!(Instant::now() < deadline, "the model did not load");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// `line` (method and path) with a JSON `body`: the whole answer, empty if
/// the server cannot be reached.
fn request(port: u16, line: &str, body: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let text = format!(
        "{line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(text.as_bytes());
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

/// The exit status of `child` within `timeout`, and its standard error.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<(i32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            return Some((status.code().unwrap_or(-1), err));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

const CHAT: &str = r#"{"messages": [{"role": "user", "content": "Count from 1 to 2000."}], "temperature": 0, "max_tokens": 4000, "stream": true}"#;

/// A stream that runs for many seconds: the demo model goes on counting
/// (greedy, 1500 tokens without an end-of-sequence on 2026-12-07), where a
/// chat answer stops after about 120 tokens.
const COUNTING: &str = r#"{"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "temperature": 0, "max_tokens": 4000, "stream": true}"#;

#[test]
fn a_dead_engine_ends_the_process_with_an_error() {
    let (mut child, port) = serve(&["--test-fail-after-steps", "3"]);
    let _ = request(port, "POST /v1/chat/completions", CHAT);
    let (code, err) = exit_within(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("serve went on after its engine died")
    });
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("test hook"), "the reason is printed: {err}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let (mut child, port) = serve(&["--shutdown-grace-secs", "600"]);
    // A long stream keeps the first shutdown waiting.
    let open = std::thread::spawn(move || request(port, "POST /v1/completions", COUNTING));
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    assert!(
        exit_within(&mut child, Duration::from_secs(2)).is_none(),
        "the first signal waits for the running stream"
    );
    signal(&child, "INT");
    let (code, err) = exit_within(&mut child, Duration::from_secs(5)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("serve went on after a second signal")
    });
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("second signal"), "{err}");
    let _ = open.join();
}
