//! Moving one file's bytes: into `{dest}.incomplete`, resuming with an HTTP
//! `Range` from the size already there (also after a connection drops
//! mid-body, a few times), with a progress bar; then checking size and, for
//! LFS files, sha256 before renaming into place. A file that fails its check
//! is deleted so the next run starts clean.

use super::hub::{FileMeta, Hub};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// How many times a transfer that breaks off mid-body is resumed.
const MAX_ATTEMPTS: usize = 5;

/// `{path}.incomplete`: where a file grows until it is verified.
pub fn incomplete_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".incomplete");
    PathBuf::from(name)
}

/// Downloads `url` (the file `name`, described by `meta`) to `dest`,
/// resuming an earlier partial download, and verifies it.
pub fn fetch(hub: &Hub, url: &str, name: &str, meta: &FileMeta, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let partial = incomplete_path(dest);
    let bar = progress_bar(name, meta.size);
    let mut last_error = None;
    for _ in 0..MAX_ATTEMPTS {
        match attempt(hub, url, name, meta, &partial, &bar) {
            Ok(()) => {
                last_error = None;
                break;
            }
            Err(Attempt::Fatal(e)) => {
                bar.abandon();
                return Err(e);
            }
            Err(Attempt::Interrupted(e)) => last_error = Some(e),
        }
    }
    if let Some(e) = last_error {
        bar.abandon();
        bail!("{name}: download interrupted {MAX_ATTEMPTS} times ({e}); run again to resume");
    }
    bar.finish_and_clear();
    verify(&partial, name, meta)?;
    fs::rename(&partial, dest).with_context(|| format!("moving {name} into place"))?;
    Ok(())
}

/// Checks that `path` is an existing, complete copy of the file `meta`
/// describes: its size, and its sha256 too when `check_hash` (needless for
/// cache blobs, which are named by their hash and only ever renamed into
/// place after verification).
pub fn matches(path: &Path, meta: &FileMeta, check_hash: bool) -> bool {
    let size_ok = fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == meta.size);
    size_ok
        && match meta.sha256().filter(|_| check_hash) {
            Some(want) => sha256_file(path).is_ok_and(|got| got.eq_ignore_ascii_case(want)),
            None => true,
        }
}

enum Attempt {
    /// Worth resuming: the connection broke.
    Interrupted(anyhow::Error),
    /// Not worth retrying.
    Fatal(anyhow::Error),
}

fn attempt(
    hub: &Hub,
    url: &str,
    name: &str,
    meta: &FileMeta,
    partial: &Path,
    bar: &ProgressBar,
) -> Result<(), Attempt> {
    let fatal = Attempt::Fatal;
    let mut have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if have > meta.size {
        fs::remove_file(partial).map_err(|e| fatal(e.into()))?;
        have = 0;
    }
    if have == meta.size && have > 0 {
        return Ok(());
    }
    let mut resp = hub
        .get_from(url, have, name)
        .map_err(Attempt::Interrupted)?;
    let status = resp.status().as_u16();
    let append = match status {
        206 => true,
        200 => false,
        416 => {
            // The server has nothing past `have`; start over.
            fs::remove_file(partial).map_err(|e| fatal(e.into()))?;
            return Err(Attempt::Interrupted(anyhow!("range not satisfiable")));
        }
        // Server trouble may pass; anything else (401, 404, ...) will not.
        500..=599 => return Err(Attempt::Interrupted(anyhow!("HTTP {status}"))),
        _ => return Err(fatal(hub.file_status_error(status, name))),
    };
    let start = if append { have } else { 0 };
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .map_err(|e| fatal(anyhow!("opening {}: {e}", partial.display())))?;
    bar.set_position(start);
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = start;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Attempt::Interrupted(anyhow!("{e}"))),
        };
        written += n as u64;
        if written > meta.size {
            drop(out);
            let _ = fs::remove_file(partial);
            return Err(fatal(anyhow!(
                "{name}: the server sent more than the {} bytes the hub announced; the download was deleted",
                meta.size
            )));
        }
        out.write_all(&buf[..n])
            .map_err(|e| fatal(anyhow!("writing {}: {e}", partial.display())))?;
        bar.set_position(written);
    }
    out.flush()
        .map_err(|e| fatal(anyhow!("writing {}: {e}", partial.display())))?;
    if written < meta.size {
        return Err(Attempt::Interrupted(anyhow!(
            "connection closed after {written} of {} bytes",
            meta.size
        )));
    }
    Ok(())
}

fn verify(partial: &Path, name: &str, meta: &FileMeta) -> Result<()> {
    let size = fs::metadata(partial)
        .with_context(|| format!("reading {}", partial.display()))?
        .len();
    if size != meta.size {
        let _ = fs::remove_file(partial);
        bail!(
            "size mismatch for {name}: expected {} bytes, got {size}; the download was deleted",
            meta.size
        );
    }
    if let Some(want) = meta.sha256() {
        let got = sha256_file(partial).with_context(|| format!("hashing {name}"))?;
        if !got.eq_ignore_ascii_case(want) {
            let _ = fs::remove_file(partial);
            bail!(
                "sha256 mismatch for {name}: expected {want}, got {got}; the download was deleted"
            );
        }
    }
    Ok(())
}

/// The sha256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn progress_bar(name: &str, size: u64) -> ProgressBar {
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:32!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    bar
}
