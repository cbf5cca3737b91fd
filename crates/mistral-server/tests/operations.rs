//! What an operator relies on, end to end with the real SmolLM2: an
//! engine that dies shows on `/health` and ends `serve`; a shutdown lets
//! running requests finish for its grace period, then cuts them off; a
//! queued stream gets its 200 and keep-alive comments while it waits; a
//! body that cannot be read is a 400.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get, post, post_raw, start_configured, Server, MODEL_ID};
use serde_json::{json, Value};

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

/// Sends a streamed chat request over a raw socket and returns a reader on
/// the answer (a read timeout of `timeout`).
fn open_stream(server: &Server, body: &Value, timeout: Duration) -> BufReader<TcpStream> {
    let address = server.base.trim_start_matches("http://");
    let body = body.to_string();
    let mut socket = TcpStream::connect(address).expect("connect");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    BufReader::new(socket)
}

/// The next line of `reader` (without its end), `None` at the end or on a
/// timeout.
fn line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

#[test]
fn an_engine_that_dies_ends_serve_with_the_reason() {
    let mut server = start_configured(|c| c.fail_after_steps = Some(3));
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        &chat("Tell me a story.", 20, false).to_string(),
        "application/json",
        None,
    );
    assert_eq!(status, 500, "{body}");
    let ended = server
        .ended_within(Duration::from_secs(30))
        .expect("serve returned after the engine died");
    let err = ended.expect_err("serve reports the failure");
    assert!(err.contains("test hook"), "{err}");
}

#[test]
fn a_failed_engine_kept_running_answers_503_with_the_reason() {
    let mut server = start_configured(|c| {
        c.fail_after_steps = Some(3);
        c.keep_running_on_engine_failure = true;
    });
    assert_eq!(get(&server, "/health/live", None).0, 200);
    let (status, _) = post(&server, "/v1/chat/completions", &chat("Hi.", 20, false));
    assert_eq!(status, 500);
    // The request ends as the engine thread unwinds; its health is set once
    // the unwinding is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&server, "/health", None).0 == 200 {
        assert!(Instant::now() < deadline, "/health still 200 after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    for probe in ["/health", "/health/ready", "/health/live"] {
        let (status, text) = get(&server, probe, None);
        assert_eq!(status, 503, "{probe}: {text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["status"], "failed", "{probe}: {text}");
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("test hook")),
            "{probe}: {text}"
        );
    }
    let (status, body) = post(&server, "/v1/chat/completions", &chat("Hi.", 2, false));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("test hook")),
        "{body}"
    );
    assert!(server.ended_within(Duration::from_millis(500)).is_none());
}

#[test]
fn a_shutdown_cuts_off_a_stream_at_the_end_of_its_grace_period() {
    let grace = Duration::from_secs(2);
    let mut server = start_configured(|c| c.shutdown_grace = grace);
    // An answer far longer than the grace period allows on this CPU.
    let body = chat("Count from 1 to 2000, separated by commas.", 4000, true);
    let mut stream = open_stream(&server, &body, Duration::from_secs(60));
    let status = line(&mut stream).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Wait for generated text before shutting down.
    loop {
        let l = line(&mut stream).expect("a chunk before the shutdown");
        if l.starts_with("data: ")
            && l.contains("\"content\":\"")
            && !l.contains("\"content\":\"\"")
        {
            break;
        }
    }
    let asked = Instant::now();
    server.shut_down();
    // New connections are refused once the shutdown starts.
    std::thread::sleep(Duration::from_millis(300));
    let address = server.base.trim_start_matches("http://").to_owned();
    let refused = TcpStream::connect(&address).is_err() || get(&server, "/health", None).0 == 503;
    assert!(refused, "a new request was accepted during the shutdown");
    let mut last_data = String::new();
    while let Some(l) = line(&mut stream) {
        if let Some(data) = l.strip_prefix("data: ") {
            last_data = data.to_owned();
        }
    }
    let took = asked.elapsed();
    let error: Value = serde_json::from_str(&last_data).unwrap_or(json!({}));
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "the stream ends with the cut-off error: {last_data}"
    );
    assert!(
        took >= grace && took < grace + Duration::from_secs(10),
        "the stream ended {took:?} after the shutdown (grace {grace:?})"
    );
    let ended = server
        .ended_within(Duration::from_secs(15))
        .expect("serve returned after the grace period");
    assert!(ended.is_ok(), "{ended:?}");
}

#[test]
fn a_queued_stream_gets_its_200_and_keep_alive_comments() {
    let server = start_configured(|c| {
        c.max_batch = 1;
        c.keep_alive = Duration::from_millis(300);
    });
    // The only batch place is taken by a long answer.
    let busy = chat("Write a very long story about a lighthouse.", 400, true);
    let mut first = open_stream(&server, &busy, Duration::from_secs(60));
    loop {
        let l = line(&mut first).expect("the first stream starts");
        if l.starts_with("data: ") {
            break;
        }
    }
    let mut queued = open_stream(&server, &chat("Hi.", 4, true), Duration::from_secs(5));
    let status = line(&mut queued).expect("the queued stream's status");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut comments = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while comments < 2 && Instant::now() < deadline {
        match line(&mut queued) {
            Some(l) if l.starts_with(':') => comments += 1,
            Some(l) => assert!(
                !l.contains("\"content\":\"") || l.contains("\"content\":\"\""),
                "the queued request generated while the batch was full: {l}"
            ),
            None => break,
        }
    }
    assert!(comments >= 2, "keep-alive comments while queued");
    drop(first);
}

#[test]
fn a_body_that_cannot_be_read_is_a_400_and_a_long_one_a_413() {
    let server = start_configured(|c| c.max_body_bytes = 1024);
    let address = server.base.trim_start_matches("http://");
    // A chunked body whose chunk size is not hexadecimal.
    let mut socket = TcpStream::connect(address).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let long = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "a".repeat(2048)
    );
    let (status, text) = post_raw(
        &server,
        "/v1/chat/completions",
        &long,
        "application/json",
        None,
    );
    assert_eq!(status, 413, "{text}");
}
