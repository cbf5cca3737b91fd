//! A server on 127.0.0.1 with the real SmolLM2-135M-Instruct (the GGUF file
//! `cargo xtask test` prepares), and a small HTTP client for it.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use mistral_server::{serve, ModelSpec, ServerConfig};

use serde_json::Value;

#[path = "../../../mistral-loader/tests/reference/test_env.rs"]
pub mod test_env;

/// A running server; dropped, it shuts down.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Server {
    /// Asks the server to shut down (as a signal would), without waiting.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// What `serve` returned, once it returns within `timeout`.
    pub fn ended_within(&mut self, timeout: Duration) -> Option<Result<(), String>> {
        let deadline = Instant::now() + timeout;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let thread = self.thread.take()?;
        Some(
            thread
                .join()
                .unwrap_or_else(|_| Err("the server thread panicked".into())),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The id the test servers serve.
pub const MODEL_ID: &str = "smollm2-test";

/// Starts a server with `api_key` and `max_body_bytes`, waiting until
/// `/health` says the model is loaded.
pub fn start(api_key: Option<&str>, max_body_bytes: usize) -> Server {
    start_with(api_key, max_body_bytes, Vec::new())
}

/// [`start`] with CORS for `origins`.
pub fn start_with(api_key: Option<&str>, max_body_bytes: usize, origins: Vec<String>) -> Server {
    start_configured(|config| {
        config.api_key = api_key.map(str::to_owned);
        config.max_body_bytes = max_body_bytes;
        config.allowed_origins = origins;
    })
}

/// A server with the test defaults as `change` leaves them.
pub fn start_configured(change: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig {
        model: ModelSpec {
            path: test_env::smollm2_path(),
            options: mistral_loader::LoadOptions::default(),
            tensor_parallel: None,
            tokenizer_mode: mistral_loader::TokenizerMode::Auto,
            chat_template: None,
        },
        model_id: MODEL_ID.to_owned(),
        api_key: None,
        metrics_public: false,
        max_queue: 16,
        max_batch: 8,
        prompt_cache_bytes: 1 << 30,
        max_kv_bytes: None,
        kv_quantization: None,
        max_body_bytes: 1 << 20,
        allowed_origins: Vec::new(),
        keep_alive: std::time::Duration::from_secs(10),
        shutdown_grace: std::time::Duration::from_secs(30),
        keep_running_on_engine_failure: false,
        fail_after_steps: None,
    };
    change(&mut config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serve(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| e.to_string())
        })
    });
    let server = Server {
        base,
        stop: Some(stop),
        thread: Some(thread),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, _) = get(&server, "/health", None);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "/health while loading");
        assert!(Instant::now() < deadline, "the model did not load in 180 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// GET `path`: status and body text.
pub fn get(server: &Server, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = agent().get(format!("{}{path}", server.base));
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    match request.call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            (
                status,
                response.body_mut().read_to_string().unwrap_or_default(),
            )
        }
        // Not yet listening.
        Err(_) => (503, String::new()),
    }
}

/// GET `path` with the header `name: value`: status and body text.
pub fn get_with(server: &Server, path: &str, name: &str, value: &str) -> (u16, String) {
    let mut response = agent()
        .get(format!("{}{path}", server.base))
        .header(name, value)
        .call()
        .expect("GET");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// POST `body` (raw text) to `path` with `content_type`: status and body.
pub fn post_raw(
    server: &Server,
    path: &str,
    body: &str,
    content_type: &str,
    key: Option<&str>,
) -> (u16, String) {
    let mut request = agent()
        .post(format!("{}{path}", server.base))
        .header("Content-Type", content_type);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request.send(body).expect("POST");
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("body");
    (status, text)
}

/// POST JSON: status and parsed body.
pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = post_raw(server, path, &body.to_string(), "application/json", None);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {text}"));
    (status, value)
}

/// POST with `stream: true`: the `data:` payloads in order.
pub fn post_stream(server: &Server, path: &str, body: &Value) -> Vec<String> {
    let (status, text) = post_raw(server, path, &body.to_string(), "application/json", None);
    assert_eq!(status, 200, "{path} stream: {text}");
    text.lines()
        .filter_map(|line| line.strip_prefix("data: ").or(line.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

/// Checks `body` is OpenAI's error object and returns its `error`.
pub fn error_object(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    assert!(error["type"].is_string(), "type: {body}");
    assert!(error.get("param").is_some(), "param: {body}");
    assert!(error.get("code").is_some(), "code: {body}");
    error
}

/// An OPTIONS preflight from `origin`: the status and the
/// `access-control-allow-origin` header, if any.
pub fn preflight(server: &Server, path: &str, origin: &str) -> (u16, Option<String>) {
    let response = agent()
        .options(format!("{}{path}", server.base))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,authorization",
        )
        .call()
        .expect("OPTIONS");
    let allowed = response
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), allowed)
}

/// The value of the Prometheus metric `name` at `/metrics`.
pub fn metric(server: &Server, name: &str) -> f64 {
    let (status, text) = get(server, "/metrics", None);
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// POSTs `body` (a streaming request) over a raw socket, reads the start
/// of the `200` answer, and closes the connection: a client that leaves.
/// A stream opens once queued, so the client may leave before the engine
/// takes the request (see [`stream_and_leave_once_started`]).
pub fn stream_and_leave(server: &Server, path: &str, body: &Value) {
    drop(open_stream(server, path, body));
}

/// [`stream_and_leave`], leaving only once the engine has taken the
/// request (`mistral_prompt_tokens_total` grew): a client that leaves
/// during the prefill.
pub fn stream_and_leave_once_started(server: &Server, path: &str, body: &Value) {
    let before = metric(server, "mistral_prompt_tokens_total");
    let socket = open_stream(server, path, body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while metric(server, "mistral_prompt_tokens_total") <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never took the request"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(socket);
}

/// POSTs `body` over a raw socket and reads the start of the `200` answer;
/// the connection stays open while the socket lives.
fn open_stream(server: &Server, path: &str, body: &Value) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let address = server.base.trim_start_matches("http://");
    let body = body.to_string();
    let mut socket = std::net::TcpStream::connect(address).expect("connect");
    write!(
        socket,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut first = [0u8; 256];
    let n = socket.read(&mut first).expect("first bytes");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    socket
}

/// Runs the client check `module` (e.g. `checks.tool_calls_check`, in
/// `xtask/python`) with the reference interpreter as `module BASE_URL
/// test-key MODEL_ID [extra]` against `server` (started with the key
/// `test-key`), asserts it succeeded and printed `checks` lines `ok: ...`
/// (one per check passed), and returns its output.
pub fn run_client_check(
    server: &Server,
    module: &str,
    extra: &[&std::ffi::OsStr],
    checks: usize,
) -> String {
    let output = test_env::python_module(module)
        .args([server.base.as_str(), "test-key", MODEL_ID])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running {module} (run `cargo xtask test` for the venv): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "{module} failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        checks,
        "{stdout}"
    );
    stdout
}
