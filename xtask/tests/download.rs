//! `cargo xtask download` end to end: the built xtask binary against a fake
//! hub on 127.0.0.1 (see `support/fake_hub.rs`), checking the Hugging Face
//! cache layout and `--local-dir` byte for byte, resuming after a dropped
//! connection, the token, and the one-line errors.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::fake_hub::FakeHub;
use support::fake_model::{sharded_model, FakeRepo, MODEL_FILES, SHARDS};

const REPO: &str = "org/tiny";

/// Runs `xtask download` with the environment pointed at `hub` and `home`.
fn run(hub: &FakeHub, home: &Path, token: Option<&str>, args: &[&str]) -> Output {
    run_at(&hub.endpoint, home, token, args)
}

/// Runs `xtask download` against the hub at `endpoint`.
fn run_at(endpoint: &str, home: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("download")
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN");
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.output().expect("running xtask")
}

fn stdout_path(out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "xtask failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The error line of a failed run (and that it is one line).
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "xtask should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected in: {stderr}");
    assert!(!stderr.contains("Caused by"), "{stderr}");
    lines[0].to_owned()
}

fn hub_with_model() -> (FakeHub, FakeRepo) {
    let hub = FakeHub::start();
    let repo = sharded_model();
    hub.add_repo(REPO, repo.clone());
    (hub, repo)
}

/// Every model file is in `dir` with the repo's bytes, and nothing else is.
fn assert_model_files(dir: &Path, repo: &FakeRepo) {
    for name in MODEL_FILES {
        let got = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == repo.files[name].bytes, "{name} differs");
    }
    let mut present: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    present.sort();
    let mut want: Vec<String> = MODEL_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(present, want);
}

fn cdn_gets(hub: &FakeHub) -> usize {
    hub.seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.starts_with("/cdn/"))
        .count()
}

#[test]
fn fills_the_hub_cache_layout() {
    let (hub, repo) = hub_with_model();
    let home = tempfile::tempdir().unwrap();
    let snapshot = stdout_path(&run(&hub, home.path(), None, &[REPO]));
    let repo_dir = home.path().join("hf/hub/models--org--tiny");
    assert_eq!(snapshot, repo_dir.join("snapshots").join(&repo.commit));
    assert_model_files(&snapshot, &repo);
    for name in MODEL_FILES {
        let etag = repo.files[name].etag();
        let link = fs::read_link(snapshot.join(name)).unwrap();
        assert_eq!(link, Path::new("../../blobs").join(&etag), "{name}");
        assert!(repo_dir.join("blobs").join(&etag).is_file());
    }
    let sha = support::fake_model::sha256_hex(&repo.files[SHARDS[0]].bytes);
    assert!(repo_dir.join("blobs").join(sha).is_file());
    let main = fs::read_to_string(repo_dir.join("refs/main")).unwrap();
    assert_eq!(main, repo.commit);
    let blobs: Vec<_> = fs::read_dir(repo_dir.join("blobs")).unwrap().collect();
    assert_eq!(
        blobs.len(),
        MODEL_FILES.len(),
        "no .incomplete or extra blobs"
    );

    // A second run finds everything in place and transfers nothing.
    let before = cdn_gets(&hub);
    assert_eq!(
        stdout_path(&run(&hub, home.path(), None, &[REPO])),
        snapshot
    );
    assert_eq!(cdn_gets(&hub), before);
}

#[test]
fn writes_plain_files_to_a_local_dir() {
    let (hub, repo) = hub_with_model();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("model");
    let args = [REPO, "--local-dir", dir.to_str().unwrap()];
    assert_eq!(stdout_path(&run(&hub, home.path(), None, &args)), dir);
    assert_model_files(&dir, &repo);
    for name in MODEL_FILES {
        assert!(!fs::symlink_metadata(dir.join(name)).unwrap().is_symlink());
    }
    assert!(
        !home.path().join("hf/hub").exists(),
        "the cache is untouched"
    );
}

#[test]
fn resumes_a_dropped_transfer_with_a_range_request() {
    let (hub, repo) = hub_with_model();
    hub.drop_first_transfer(SHARDS[1]);
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("model");
    let args = [REPO, "--local-dir", dir.to_str().unwrap()];
    stdout_path(&run(&hub, home.path(), None, &args));
    assert_model_files(&dir, &repo);
    let shard_etag = repo.files[SHARDS[1]].etag();
    let ranges: Vec<String> = hub
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path == format!("/cdn/{shard_etag}"))
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    let half = repo.files[SHARDS[1]].bytes.len() / 2;
    assert_eq!(ranges, [format!("bytes={half}-")]);
}

#[test]
fn sends_hf_token_as_bearer() {
    let (hub, repo) = hub_with_model();
    hub.require_token("hf_secret");
    let home = tempfile::tempdir().unwrap();

    let err = error_line(&run(&hub, home.path(), None, &[REPO]));
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");

    let snapshot = stdout_path(&run(&hub, home.path(), Some("hf_secret"), &[REPO]));
    assert_model_files(&snapshot, &repo);
    let api = hub
        .seen()
        .into_iter()
        .rfind(|s| s.path.starts_with("/api/models/"))
        .unwrap();
    assert_eq!(api.headers["authorization"], "Bearer hf_secret");
    // The token goes to the hub only, never to the CDN it redirects to.
    assert!(hub
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/cdn/"))
        .all(|s| !s.headers.contains_key("authorization")));
}

#[test]
fn missing_repo_is_one_clear_line() {
    let (hub, _) = hub_with_model();
    let home = tempfile::tempdir().unwrap();
    let err = error_line(&run(&hub, home.path(), None, &["org/missing"]));
    assert!(
        err.contains("org/missing") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn corrupted_body_is_a_hash_mismatch_and_is_deleted() {
    let (hub, repo) = hub_with_model();
    hub.corrupt(SHARDS[0]);
    let home = tempfile::tempdir().unwrap();
    let err = error_line(&run(&hub, home.path(), None, &[REPO]));
    assert!(
        err.contains("sha256 mismatch") && err.contains(SHARDS[0]),
        "{err}"
    );
    assert!(err.contains("deleted"), "{err}");
    let blobs = home.path().join("hf/hub/models--org--tiny/blobs");
    let etag = repo.files[SHARDS[0]].etag();
    assert!(!blobs.join(&etag).exists());
    assert!(!blobs.join(format!("{etag}.incomplete")).exists());
}

#[test]
fn unreachable_hub_is_one_clear_line() {
    // A port that was just free: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = error_line(&run_at(&endpoint, home.path(), None, &[REPO]));
    assert!(
        err.contains("network error") && err.contains(&endpoint),
        "{err}"
    );
}

#[test]
fn resumes_from_a_partial_file_left_by_an_earlier_run() {
    let (hub, repo) = hub_with_model();
    let home = tempfile::tempdir().unwrap();
    let shard = &repo.files[SHARDS[0]];
    let blobs = home.path().join("hf/hub/models--org--tiny/blobs");
    fs::create_dir_all(&blobs).unwrap();
    let have = 12_345;
    let partial = blobs.join(format!("{}.incomplete", shard.etag()));
    fs::write(&partial, &shard.bytes[..have]).unwrap();

    let snapshot = stdout_path(&run(&hub, home.path(), None, &[REPO]));
    assert_model_files(&snapshot, &repo);
    assert!(!partial.exists());
    let range = hub
        .seen()
        .into_iter()
        .find(|s| s.path == format!("/cdn/{}", shard.etag()))
        .and_then(|s| s.headers.get("range").cloned());
    assert_eq!(range, Some(format!("bytes={have}-")));
}
