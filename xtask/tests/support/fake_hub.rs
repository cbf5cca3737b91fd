//! A small HTTP/1.1 server on 127.0.0.1 that answers like the Hugging Face
//! hub for the requests `cargo xtask download` makes:
//!
//! - `GET /api/models/{repo}/revision/{rev}`: commit and file list;
//! - `HEAD|GET /{repo}/resolve/{rev}/{file}`: LFS files redirect (302) to
//!   `/cdn/{sha256}` on a second port (another origin, like the real CDN) with `X-Linked-Size`/`X-Linked-Etag`, others answer
//!   directly with `ETag`;
//! - `GET /cdn/{sha256}`: LFS contents.
//!
//! Bodies honour `Range: bytes=N-`. Faults on demand: drop the connection
//! half-way through a file's first full GET, serve a corrupted body, or
//! require a token. Every request is recorded for the test to inspect. One
//! thread per connection, and `Connection: close` on every answer.

use super::fake_model::FakeRepo;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
}

/// What the server serves and how it misbehaves.
#[derive(Default)]
struct State {
    repos: BTreeMap<String, FakeRepo>,
    token: Option<String>,
    cdn: String,
    drop_once: BTreeSet<String>,
    corrupt: BTreeSet<String>,
    seen: Vec<Seen>,
}

/// A running fake hub; it lives as long as the test process.
pub struct FakeHub {
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl FakeHub {
    /// Starts a server on a free port.
    pub fn start() -> FakeHub {
        let state = Arc::new(Mutex::new(State::default()));
        let endpoint = listen(&state);
        state.lock().unwrap().cdn = listen(&state);
        FakeHub { endpoint, state }
    }

    /// Serves `repo` as `repo_id`.
    pub fn add_repo(&self, repo_id: &str, repo: FakeRepo) {
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(repo_id.into(), repo);
    }

    /// Answers 401 unless `Authorization: Bearer {token}` is sent.
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().token = Some(token.into());
    }

    /// Drops the connection half-way through the first full GET of `file`.
    pub fn drop_first_transfer(&self, file: &str) {
        self.state.lock().unwrap().drop_once.insert(file.into());
    }

    /// Serves `file` with one byte changed (same size, wrong hash).
    pub fn corrupt(&self, file: &str) {
        self.state.lock().unwrap().corrupt.insert(file.into());
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// Serves `state` on a new port; returns its origin.
fn listen(state: &Arc<Mutex<State>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let shared = state.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = shared.clone();
            thread::spawn(move || {
                let _ = serve(stream, &state);
            });
        }
    });
    origin
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    };
    let answer = {
        let mut state = state.lock().unwrap();
        state.seen.push(seen);
        route(&mut state, &method, &path, &headers)
    };
    answer.send(stream, method == "HEAD")
}

/// An answer: status, headers, body, and whether to cut the body short.
struct Answer {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut_at: Option<usize>,
}

impl Answer {
    fn new(status: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body,
            cut_at: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn send(self, mut stream: TcpStream, head: bool) -> std::io::Result<()> {
        let mut out = format!("HTTP/1.1 {}\r\nConnection: close\r\n", self.status);
        let has_length = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        if !has_length {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        stream.write_all(out.as_bytes())?;
        if !head {
            let end = self.cut_at.unwrap_or(self.body.len());
            stream.write_all(&self.body[..end])?;
        }
        stream.flush()?;
        stream.shutdown(std::net::Shutdown::Both)
    }
}

fn route(
    state: &mut State,
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
) -> Answer {
    if let Some(token) = &state.token {
        let auth = headers.get("authorization").map(String::as_str);
        if auth != Some(format!("Bearer {token}").as_str()) && !path.starts_with("/cdn/") {
            return Answer::new("401 Unauthorized", b"{\"error\":\"unauthorized\"}".to_vec());
        }
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        return model_info(state, rest);
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let found = state.repos.values().find_map(|r| {
            r.files
                .iter()
                .find(|(_, f)| f.lfs && f.etag() == sha)
                .map(|(name, f)| (name.clone(), f.bytes.clone()))
        });
        return match found {
            Some((name, bytes)) => body(state, &name, bytes, headers),
            None => Answer::new("404 Not Found", Vec::new()),
        };
    }
    // /{org}/{name}/resolve/{rev}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let repo_id = format!("{}/{}", parts[0], parts[1]);
        let Some(repo) = state.repos.get(&repo_id) else {
            return Answer::new("404 Not Found", Vec::new());
        };
        if parts[3] != repo.commit && parts[3] != "main" {
            return Answer::new("404 Not Found", Vec::new());
        }
        let Some(file) = repo.files.get(parts[4]).cloned() else {
            return Answer::new("404 Not Found", Vec::new());
        };
        let commit = repo.commit.clone();
        if file.lfs {
            let etag = file.etag();
            return Answer::new("302 Found", Vec::new())
                .header("Location", format!("{}/cdn/{etag}", state.cdn))
                .header("X-Linked-Etag", format!("\"{etag}\""))
                .header("X-Linked-Size", file.bytes.len().to_string())
                .header("X-Repo-Commit", commit);
        }
        let etag = file.etag();
        let answer = if method == "HEAD" {
            Answer::new("200 OK", Vec::new()).header("Content-Length", file.bytes.len().to_string())
        } else {
            body(state, parts[4], file.bytes, headers)
        };
        return answer
            .header("ETag", format!("\"{etag}\""))
            .header("X-Repo-Commit", commit);
    }
    Answer::new("404 Not Found", Vec::new())
}

fn model_info(state: &State, rest: &str) -> Answer {
    let Some((repo_id, rev)) = rest.split_once("/revision/") else {
        return Answer::new("404 Not Found", Vec::new());
    };
    match state.repos.get(repo_id) {
        Some(repo) if rev == "main" || rev == repo.commit => {
            let siblings: Vec<String> = repo
                .files
                .keys()
                .map(|f| format!("{{\"rfilename\": \"{f}\"}}"))
                .collect();
            let json = format!(
                "{{\"id\": \"{repo_id}\", \"sha\": \"{}\", \"siblings\": [{}]}}",
                repo.commit,
                siblings.join(", ")
            );
            Answer::new("200 OK", json.into_bytes()).header("Content-Type", "application/json")
        }
        _ => Answer::new(
            "404 Not Found",
            b"{\"error\":\"Repository not found\"}".to_vec(),
        ),
    }
}

/// A file body, honouring `Range: bytes=N-` and the fault settings.
fn body(
    state: &mut State,
    name: &str,
    mut bytes: Vec<u8>,
    headers: &BTreeMap<String, String>,
) -> Answer {
    if state.corrupt.contains(name) {
        if let Some(b) = bytes.last_mut() {
            *b ^= 0xff;
        }
    }
    let total = bytes.len();
    let start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(start) if start >= total => Answer::new("416 Range Not Satisfiable", Vec::new())
            .header("Content-Range", format!("bytes */{total}")),
        Some(start) => Answer::new("206 Partial Content", bytes[start..].to_vec()).header(
            "Content-Range",
            format!("bytes {start}-{}/{total}", total - 1),
        ),
        None => {
            let mut answer = Answer::new("200 OK", bytes);
            if state.drop_once.remove(name) {
                answer.cut_at = Some(total / 2);
            }
            answer
        }
    }
}
