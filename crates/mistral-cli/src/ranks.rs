//! Running one command as several ranks of a tensor-parallel group.
//!
//! - [`launch`]: `--ranks N` on this machine: the command starts itself N
//!   times with MLX's ring environment (`MLX_RANK`, `MLX_HOSTFILE` naming N
//!   free ports on 127.0.0.1), as MLX's own launcher does; when MLX computes
//!   on a GPU and has its NCCL backend (the CUDA build), with NCCL's
//!   instead (`MLX_RANK`, `MLX_WORLD_SIZE`, `NCCL_HOST_IP` 127.0.0.1, a
//!   free `NCCL_PORT`), each rank seeing one GPU (`CUDA_VISIBLE_DEVICES`:
//!   the rank's entry of the caller's list, else the rank). Rank 0's output
//!   passes through; the others' is dropped unless they fail. When one rank
//!   fails, the others are stopped and the command fails with its status.
//! - [`join`]: in a process started that way (or by `mlx.launch`, or by
//!   hand with the same variables, across machines), joins the group: the
//!   ring when `MLX_HOSTFILE` is set, NCCL when `NCCL_HOST_IP` is, within a
//!   time limit (a rank that never starts is an error, not a hang).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mistral_model::TensorParallel;
use mlx_rs_core::distributed::{write_loopback_hostfile, Backend, Group};

/// How long the ranks wait for each other to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What `--ranks` makes of this process.
pub enum Role {
    /// It started the ranks ([`launch`]), which have all ended well.
    Launcher,
    /// It computes: alone (`None`), or as a rank of a group ([`join`]).
    Worker(Option<TensorParallel>),
}

/// `--ranks n`: runs the command as `n` local ranks when asked and this
/// process is not one already, else joins the group it was started in.
pub fn role(n: u32) -> Result<Role> {
    if n > 1 && !is_rank() {
        launch(n)?;
        return Ok(Role::Launcher);
    }
    Ok(Role::Worker(join()?))
}

/// Whether this process prints: it is alone or rank 0 (every rank computes
/// the same tokens).
pub fn prints(parallel: &Option<TensorParallel>) -> bool {
    parallel.as_ref().is_none_or(|p| p.rank() == 0)
}

/// Whether this process was started as a rank (by [`launch`] or MLX's
/// launcher).
fn is_rank() -> bool {
    std::env::var_os("MLX_RANK").is_some()
}

/// Joins the group this process was started in; `None` when it was not
/// started as a rank, or the group has one process.
fn join() -> Result<Option<TensorParallel>> {
    if !is_rank() {
        return Ok(None);
    }
    let backend = if std::env::var_os("MLX_HOSTFILE").is_some() {
        Backend::Ring
    } else if std::env::var_os("NCCL_HOST_IP").is_some() {
        Backend::Nccl
    } else {
        Backend::Any
    };
    let group = Group::init_within(backend, JOIN_TIMEOUT)?;
    Ok((group.size() > 1).then(|| TensorParallel::new(group)))
}

/// Runs this command as `n` local ranks (see the module notes): the same
/// arguments without `--ranks`.
fn launch(n: u32) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program to start its ranks")?;
    let args = without_ranks(std::env::args().skip(1));
    let dir = tempfile::tempdir().context("creating the hostfile's folder")?;
    let hostfile = dir.path().join("hosts.json");
    let nccl = mlx_rs_core::runtime::on_gpu() && Backend::Nccl.is_available();
    let nccl_port = if nccl {
        free_port()?
    } else {
        write_loopback_hostfile(n as usize, &hostfile)?;
        0
    };
    let devices = if nccl { gpu_list(n)? } else { Vec::new() };
    let mut children = Vec::new();
    for rank in 0..n {
        let mut command = Command::new(&exe);
        command.args(&args).env("MLX_RANK", rank.to_string());
        if nccl {
            command
                .env("MLX_WORLD_SIZE", n.to_string())
                .env("NCCL_HOST_IP", "127.0.0.1")
                .env("NCCL_PORT", nccl_port.to_string())
                .env("CUDA_VISIBLE_DEVICES", &devices[rank as usize]);
        } else {
            command.env("MLX_HOSTFILE", &hostfile);
        }
        if rank > 0 {
            command.stdout(Stdio::null()).stderr(Stdio::piped());
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.push(child);
    }
    supervise(children)
}

/// A TCP port free on 127.0.0.1 now (for NCCL's rendezvous).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port on 127.0.0.1 for NCCL")?;
    Ok(listener.local_addr()?.port())
}

/// The GPU each of `n` ranks sees: the entries of the caller's
/// `CUDA_VISIBLE_DEVICES` in turn (an error when it names fewer than `n`),
/// else 0, 1, ...
fn gpu_list(n: u32) -> Result<Vec<String>> {
    let given: Vec<String> = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if given.is_empty() {
        return Ok((0..n).map(|rank| rank.to_string()).collect());
    }
    if given.len() < n as usize {
        bail!(
            "--ranks {n} needs {n} GPUs, one per rank, but CUDA_VISIBLE_DEVICES names {}",
            given.len()
        );
    }
    Ok(given[..n as usize].to_vec())
}

/// Waits for every rank; the first to fail stops the others.
fn supervise(mut children: Vec<Child>) -> Result<()> {
    let mut done = vec![false; children.len()];
    loop {
        for (rank, child) in children.iter_mut().enumerate() {
            if done[rank] {
                continue;
            }
            let Some(status) = child.try_wait()? else {
                continue;
            };
            done[rank] = true;
            if !status.success() {
                let mut detail = String::new();
                if let Some(mut err) = child.stderr.take() {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut detail);
                }
                for other in children.iter_mut() {
                    let _ = other.kill();
                    let _ = other.wait();
                }
                if !detail.trim().is_empty() {
                    eprintln!("{}", detail.trim_end());
                }
                bail!("rank {rank} failed ({status}); the other ranks were stopped");
            }
        }
        if done.iter().all(|&d| d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `args` without `--ranks N` / `--ranks=N`.
fn without_ranks(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
        } else if arg == "--ranks" {
            skip = true;
        } else if !arg.starts_with("--ranks=") {
            out.push(arg);
        }
    }
    out
}
