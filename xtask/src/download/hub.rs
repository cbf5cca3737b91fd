//! Talking to the hub: the model-info API (commit and file list), the
//! resolve endpoint's HEAD (size and ETag of a file) and GETs with an
//! optional `Range`.
//!
//! Redirects are followed by hand: the hub puts the size and hash of an LFS
//! file (`X-Linked-Size`, `X-Linked-Etag`) on its redirect to the CDN, so the
//! HEAD must see that response, and the token must only go to the hub itself.
//! Every failure becomes one line that says what to do.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::time::Duration;
use ureq::http::{HeaderMap, Response};
use ureq::tls::{RootCerts, TlsConfig};
use ureq::{Agent, Body};

/// How many redirects one request may follow.
const MAX_REDIRECTS: usize = 10;

/// A hub endpoint and the credentials to use with it.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: Agent,
}

/// What the model-info API says about a revision.
#[derive(Debug, Deserialize)]
pub struct RepoInfo {
    /// The commit the revision points at.
    pub sha: String,
    /// The repository's files.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// One file of a repository.
#[derive(Debug, Deserialize)]
pub struct Sibling {
    /// Its path in the repository.
    pub rfilename: String,
}

/// Size and ETag of one file, from the resolve endpoint's HEAD.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// The hub's ETag without quotes: the sha256 of an LFS file, the git
    /// blob hash of another.
    pub etag: String,
}

impl FileMeta {
    /// The sha256 to check the finished file against (LFS files only).
    pub fn sha256(&self) -> Option<&str> {
        let hex = self.etag.len() == 64 && self.etag.chars().all(|c| c.is_ascii_hexdigit());
        hex.then_some(self.etag.as_str())
    }
}

impl Hub {
    /// A client for `endpoint` (no trailing slash needed), sending `token`
    /// as `Authorization: Bearer` to that endpoint only.
    pub fn new(endpoint: &str, token: Option<String>) -> Hub {
        let agent: Agent = Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("mistral-mlx-xtask/", env!("CARGO_PKG_VERSION")))
            // The system's trust store, so company proxies and mirrors with
            // their own CA work as they do for curl and pip.
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::PlatformVerifier)
                    .build(),
            )
            .build()
            .into();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// The commit and file list of `repo_id` at `revision`.
    pub fn repo_info(&self, repo_id: &str, revision: &str) -> Result<RepoInfo> {
        let url = format!(
            "{}/api/models/{repo_id}/revision/{}",
            self.endpoint,
            encode(revision, false)
        );
        let mut resp = self.send("GET", &url, None)?;
        self.check_status(&resp, repo_id, revision, None)?;
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow!("reading {url}: {e}"))?;
        serde_json::from_str(&body).map_err(|e| anyhow!("unexpected answer from {url}: {e}"))
    }

    /// The resolve URL of `file` in `repo_id` at `commit`.
    pub fn file_url(&self, repo_id: &str, commit: &str, file: &str) -> String {
        format!(
            "{}/{repo_id}/resolve/{}/{}",
            self.endpoint,
            encode(commit, false),
            encode(file, true)
        )
    }

    /// Size and ETag of `file`, read from the first response (redirect or
    /// not) that carries them.
    pub fn file_meta(&self, repo_id: &str, commit: &str, file: &str) -> Result<FileMeta> {
        let mut url = self.file_url(repo_id, commit, file);
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send("HEAD", &url, None)?;
            self.check_status(&resp, repo_id, commit, Some(file))?;
            let h = resp.headers();
            // A redirect's own ETag and length describe the redirect, not
            // the file: trust only the hub's X-Linked-* headers on it.
            let direct = resp.status().is_success();
            let etag = header(h, "x-linked-etag").or_else(|| header(h, "etag").filter(|_| direct));
            let size = header(h, "x-linked-size")
                .or_else(|| header(h, "content-length").filter(|_| direct));
            if let (Some(etag), Some(size)) = (etag, size) {
                let size = size
                    .parse()
                    .map_err(|_| anyhow!("{file}: the hub sent an invalid size {size:?}"))?;
                return Ok(FileMeta {
                    size,
                    etag: clean_etag(&etag),
                });
            }
            match redirect_target(&url, &resp) {
                Some(next) => url = next,
                None => bail!("{file}: the hub sent no ETag and size for {url}"),
            }
        }
        bail!("{file}: too many redirects from {url}")
    }

    /// GETs `url` from byte `offset` on (a `Range` request when non-zero),
    /// following redirects; returns the final response, whatever its status
    /// (see [`Hub::file_status_error`]).
    pub fn get_from(&self, url: &str, offset: u64, file: &str) -> Result<Response<Body>> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let range = (offset > 0).then(|| format!("bytes={offset}-"));
            let resp = self.send("GET", &url, range.as_deref())?;
            match redirect_target(&url, &resp) {
                Some(next) => url = next,
                None => return Ok(resp),
            }
        }
        bail!("{file}: too many redirects from {url}")
    }

    /// Whether `url` is on the hub itself (and not, say, its CDN).
    fn is_hub_url(&self, url: &str) -> bool {
        url.strip_prefix(&self.endpoint)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn send(&self, method: &str, url: &str, range: Option<&str>) -> Result<Response<Body>> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        if let (Some(token), true) = (&self.token, self.is_hub_url(url)) {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        // Sizes must be the file's own, never those of a compressed body.
        req = req.header("accept-encoding", "identity");
        if let Some(range) = range {
            req = req.header("range", range);
        }
        let req = req
            .body(())
            .map_err(|e| anyhow!("invalid request URL {url}: {e}"))?;
        self.agent
            .run(req)
            .map_err(|e| anyhow!("network error reaching {url}: {e}"))
    }

    /// The one-line error for a failed GET of `file` with HTTP `status`.
    pub fn file_status_error(&self, status: u16, file: &str) -> anyhow::Error {
        self.status_error(status, "", "", Some(file))
    }

    fn check_status(
        &self,
        resp: &Response<Body>,
        repo_id: &str,
        revision: &str,
        file: Option<&str>,
    ) -> Result<()> {
        if resp.status().is_success() || resp.status().is_redirection() {
            return Ok(());
        }
        Err(self.status_error(resp.status().as_u16(), repo_id, revision, file))
    }

    fn status_error(
        &self,
        status: u16,
        repo_id: &str,
        revision: &str,
        file: Option<&str>,
    ) -> anyhow::Error {
        let what = match file {
            Some(f) if repo_id.is_empty() => f.to_owned(),
            Some(f) => format!("{f} in {repo_id}"),
            None => format!("{repo_id} (revision {revision})"),
        };
        let token_hint = if self.token.is_some() {
            "HF_TOKEN is set but has no access to it"
        } else {
            "if it is private or gated, set HF_TOKEN to a token with access"
        };
        match status {
            401 | 403 => anyhow!("access to {what} denied (HTTP {status}): {token_hint}"),
            404 if file.is_some() => anyhow!("{what} not found (HTTP 404)"),
            404 => anyhow!(
                "repository {repo_id} or revision {revision} not found at {} (HTTP 404); {token_hint}",
                self.endpoint
            ),
            _ => anyhow!("{what}: the hub answered HTTP {status}"),
        }
    }
}

/// The target of a 3xx response, made absolute against `url`.
fn redirect_target(url: &str, resp: &Response<Body>) -> Option<String> {
    if !resp.status().is_redirection() {
        return None;
    }
    let location = header(resp.headers(), "location")?;
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location);
    }
    let scheme_end = url.find("://")? + 3;
    let host_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        Some(format!("{}{location}", &url[..host_end]))
    } else {
        let dir_end = url.rfind('/').filter(|&i| i >= host_end)?;
        Some(format!("{}/{location}", &url[..dir_end]))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `"abc"` or `W/"abc"` -> `abc`.
fn clean_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Percent-encodes everything but unreserved characters (and `/` when
/// `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_encoding() {
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert_eq!(clean_etag("\"abc\""), "abc");
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("sub dir/a.json", true), "sub%20dir/a.json");
    }
}
