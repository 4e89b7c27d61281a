//! The caller side: spawns the helper (safe in a multithreaded process: `Command` plus a
//! `pre_exec` that only calls dup2/fcntl, which are async-signal-safe), writes the id maps
//! with newuidmap/newgidmap, and pumps the step's output.

use super::cancel::{stop_step, CancelToken};
use super::network::{self, Pasta};
use super::protocol::{
    write_frame, HelperRequest, Job, Msg, CTL_FD, GO, GO_NET, GO_SINGLE, NO_NET,
};
use super::{plan, seccomp, ExecError, ExecRequest};
use crate::idmap::{self, IdMapping};
use imgfarm_common::platform::Platform;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes of output kept for the error of a failed step.
pub const TAIL_BYTES: usize = 4096;
/// Environment variable naming the helper executable (default `/proc/self/exe`).
pub const HELPER_ENV: &str = "IMGFARM_EXECUTOR_HELPER";
/// How often (ms) a cancellable step checks its token.
const CANCEL_POLL_MS: u16 = 50;
/// After a cancel kill, how long to wait for the step's pipes to close before
/// giving up on its remaining output.
const KILLED_GRACE: Duration = Duration::from_secs(10);

/// What a finished step reports besides its output.
#[derive(Debug, Clone)]
pub struct ExecReport {
    /// Exit status (always success: failures are [`ExecError::Failed`]).
    pub status: ExitStatus,
    /// Warnings (id-mapping fallback, optional mounts that failed).
    pub warnings: Vec<String>,
    /// From spawning the helper to the exec of the command (namespaces, maps, mounts).
    pub setup: Option<Duration>,
    /// Wall time of the whole run.
    pub total: Duration,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackReport {
    /// Tar entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Warnings from the layer reader.
    pub warnings: Vec<String>,
}

/// Runs steps, unpacks layers and removes trees inside user namespaces.
#[derive(Debug, Clone)]
pub struct Executor {
    helper: PathBuf,
    mapping: IdMapping,
    mapping_warning: Option<String>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

/// Run one step with a default [`Executor`]: `Ok` when it exits 0; a non-zero exit is
/// [`ExecError::Failed`] with the code and the tail of its output.
pub fn run(
    req: &ExecRequest,
    stdout: impl Write,
    stderr: impl Write,
) -> Result<ExitStatus, ExecError> {
    Executor::new().run(req, stdout, stderr).map(|r| r.status)
}

impl Executor {
    /// The helper is `$IMGFARM_EXECUTOR_HELPER` or `/proc/self/exe`; the id mapping is read
    /// from /etc/subuid and /etc/subgid for the real user (see [`idmap::detect`]).
    pub fn new() -> Self {
        let helper = std::env::var_os(HELPER_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let (mapping, w) = idmap::detect();
        let w = w
            .map(|w| w.to_string())
            .or_else(|| crate::userns::warning().map(str::to_string));
        if let Some(w) = &w {
            tracing::warn!("{w}");
        }
        Executor {
            helper,
            mapping,
            mapping_warning: w,
        }
    }

    /// Use `helper` (a binary that calls
    /// [`super::helper_main_if_requested`]) instead of `/proc/self/exe`.
    pub fn with_helper(mut self, helper: impl Into<PathBuf>) -> Self {
        self.helper = helper.into();
        self
    }

    /// Force an id mapping (e.g. [`IdMapping::Single`] to test the fallback).
    pub fn with_mapping(mut self, mapping: IdMapping) -> Self {
        self.mapping_warning = match mapping {
            IdMapping::Single { .. } => Some(
                "single-id user namespace mapping: only container root is mapped, so chown \
                 to any other id will fail"
                    .into(),
            ),
            IdMapping::Full { .. } | IdMapping::Identity { .. } => None,
        };
        self.mapping = mapping;
        self
    }

    /// The id mapping in use.
    pub fn mapping(&self) -> &IdMapping {
        &self.mapping
    }

    /// Run one step, streaming its stdout and stderr to the writers.
    pub fn run(
        &self,
        req: &ExecRequest,
        stdout: impl Write,
        stderr: impl Write,
    ) -> Result<ExecReport, ExecError> {
        self.run_cancellable(req, &CancelToken::new(), stdout, stderr)
    }

    /// [`Executor::run`] that ends early with [`ExecError::Cancelled`] once
    /// `cancel` is triggered: every process of the step is killed (see
    /// [`super::cancel`]) and reaped before it returns. A token already
    /// triggered starts nothing.
    pub fn run_cancellable(
        &self,
        req: &ExecRequest,
        cancel: &CancelToken,
        mut stdout: impl Write,
        mut stderr: impl Write,
    ) -> Result<ExecReport, ExecError> {
        plan::build(req).map_err(|e| match e {
            plan::PlanError::Snapshot(s) => ExecError::Snapshot(s),
            plan::PlanError::Invalid(s) => ExecError::Invalid(s),
        })?;
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let start = Instant::now();
        let start_mono = mono_ns();
        let seccomp = if req.sandbox.seccomp {
            // 32-bit code run natively (linux/386 on amd64, linux/arm on arm64) makes
            // syscalls of another audit architecture, which the host filter kills: the
            // solver runs it under qemu (`emulation::under_seccomp`); a caller that did not
            // gets this message instead of a SIGSYS.
            let host = Platform::host();
            if req.emulation.is_none()
                && req.platform.architecture != host.architecture
                && crate::emulation::native_platforms(&host)
                    .iter()
                    .any(|n| n.matches(&req.platform))
            {
                return Err(ExecError::Invalid(format!(
                    "{} would run natively here as 32-bit code, which the default seccomp \
                     profile does not cover (its syscalls would be killed): run it under \
                     qemu (ExecRequest::emulation), or use RUN --security=insecure",
                    req.platform
                )));
            }
            seccomp::default_programs(plan::step_caps(&req.sandbox))
                .map_err(|e| ExecError::Setup(e.to_string()))?
                .to_vec()
        } else {
            Vec::new()
        };
        let out = self.converse(
            Job::Run {
                request: Box::new(req.clone()),
                seccomp,
            },
            None,
            Some(cancel),
            &mut stdout,
            &mut stderr,
        )?;
        if out.cancelled {
            return Err(ExecError::Cancelled);
        }
        if let Some(e) = out.setup_error {
            return Err(ExecError::Setup(e));
        }
        let (code, signal) = match out.exited {
            Some(x) => x,
            None => return Err(self.protocol("the helper ended without a result", &out.tail)),
        };
        let setup = out
            .exec_mono
            .map(|t| Duration::from_nanos(t.saturating_sub(start_mono)));
        match (code, signal) {
            (Some(0), _) => Ok(ExecReport {
                status: ExitStatus::from_raw(0),
                warnings: out.warnings,
                setup,
                total: start.elapsed(),
            }),
            (code, signal) => Err(ExecError::Failed {
                command: req.args.clone(),
                how: match (code, signal) {
                    (Some(c), _) => format!("did not complete successfully: exit code: {c}"),
                    (_, Some(s)) => format!("was killed by signal {s}"),
                    _ => "ended".into(),
                },
                code,
                tail: out.tail,
            }),
        }
    }

    /// Unpack a layer (tar, tar+gzip or tar+zstd) from `layer` into `dest` inside a user
    /// namespace, so file owners are mapped ids (container root → the user, uid N → subuid
    /// N-1). With `parents` (lowest first), it is applied through an overlay of them (in
    /// `scratch`), so whiteouts become overlay whiteouts in `dest`, and `dest` can serve as
    /// a lower dir above them.
    pub fn unpack_layer(
        &self,
        layer: &mut (dyn Read + Send),
        dest: &Path,
        parents: &[PathBuf],
        scratch: &Path,
    ) -> Result<UnpackReport, ExecError> {
        let job = Job::Unpack {
            dest: dest.into(),
            parents: parents.to_vec(),
            scratch: scratch.into(),
        };
        let mut sink = std::io::sink();
        let mut sink2 = std::io::sink();
        let out = self.converse(job, Some(layer), None, &mut sink, &mut sink2)?;
        if let Some(e) = out.setup_error {
            return Err(ExecError::Setup(e));
        }
        out.unpacked
            .ok_or_else(|| self.protocol("the helper ended without an unpack report", &out.tail))
    }

    /// [`Executor::unpack_layer`] from a file.
    pub fn unpack_layer_file(
        &self,
        layer: &Path,
        dest: &Path,
        parents: &[PathBuf],
        scratch: &Path,
    ) -> Result<UnpackReport, ExecError> {
        let mut f = std::fs::File::open(layer).map_err(|e| {
            ExecError::Invalid(format!("cannot open layer {}: {e}", layer.display()))
        })?;
        self.unpack_layer(&mut f, dest, parents, scratch)
    }

    /// Delete `path` from inside a user namespace (files owned by sub-uids cannot be
    /// deleted by the user directly). A missing path is fine.
    pub fn remove_tree(&self, path: &Path) -> Result<(), ExecError> {
        if path.symlink_metadata().is_err() {
            return Ok(());
        }
        let mut sink = std::io::sink();
        let mut sink2 = std::io::sink();
        let out = self.converse(
            Job::Remove { path: path.into() },
            None,
            None,
            &mut sink,
            &mut sink2,
        )?;
        if let Some(e) = out.setup_error {
            return Err(ExecError::Setup(e));
        }
        if !out.removed {
            return Err(self.protocol("the helper ended without removing", &out.tail));
        }
        Ok(())
    }

    fn protocol(&self, detail: &str, tail: &str) -> ExecError {
        ExecError::Protocol {
            helper: self.helper.clone(),
            detail: if tail.is_empty() {
                detail.to_string()
            } else {
                format!("{detail}; its output ended with:\n{tail}")
            },
        }
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> ExecError {
        ExecError::Helper {
            helper: self.helper.clone(),
            what,
            source,
        }
    }

    /// Spawn the helper, run the mapping handshake, pump output until all pipes close.
    /// With `cancel`, the step is killed once it is triggered
    /// ([`Conversation::cancelled`]).
    fn converse(
        &self,
        job: Job,
        input: Option<&mut (dyn Read + Send)>,
        cancel: Option<&CancelToken>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<Conversation, ExecError> {
        let (ctl_r, ctl_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| self.io("creating the control pipe", e.into()))?;
        let ctl_w_raw = ctl_w.as_raw_fd();
        let mut cmd = Command::new(&self.helper);
        cmd.arg(super::HELPER_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if ctl_w_raw == CTL_FD {
                    if libc::fcntl(CTL_FD, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(ctl_w_raw, CTL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| self.io("starting", e))?;
        drop(ctl_w);
        let (Some(mut stdin), Some(child_out), Some(child_err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.protocol("missing pipes", ""));
        };
        let req = HelperRequest {
            job,
            mapping: self.mapping.clone(),
        };
        if let Err(e) = write_frame(&mut stdin, &req) {
            let _ = child.kill();
            let status = child.wait();
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                let how = status.map(|s| s.to_string()).unwrap_or_default();
                return Err(self.protocol(
                    &format!("it exited ({how}) without reading the request"),
                    "",
                ));
            }
            return Err(self.io("sending the request", e));
        }
        let mut conv = Conversation::default();
        if let Some(w) = &self.mapping_warning {
            conv.warnings.push(w.clone());
        }
        // Bytes the helper waits for on stdin before any input: the id maps are written,
        // the step's network is connected.
        let needs_go = !matches!(self.mapping, IdMapping::Single { .. });
        let needs_net = matches!(&req.job, Job::Run { request: r, .. } if r.network == super::StepNetwork::Isolated);
        let answers = usize::from(needs_go) + usize::from(needs_net);
        let result = std::thread::scope(|s| {
            let (go_tx, go_rx) = mpsc::channel::<u8>();
            let feeder = s.spawn(move || -> std::io::Result<()> {
                for _ in 0..answers {
                    match go_rx.recv() {
                        Ok(b) => stdin.write_all(&[b])?,
                        Err(_) => return Ok(()),
                    }
                }
                if let Some(r) = input {
                    match std::io::copy(r, &mut stdin) {
                        Ok(_) => {}
                        // The helper stopped reading (it failed): its message says why.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        Err(e) => return Err(e),
                    }
                }
                drop(stdin);
                Ok(())
            });
            let pumped = self.pump(
                &child, &ctl_r, child_out, child_err, stdout, stderr, &go_tx, cancel, &mut conv,
            );
            drop(go_tx);
            let fed = feeder
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("feeder thread panicked")));
            (pumped, fed)
        });
        let status = child.wait().map_err(|e| self.io("waiting", e));
        // The helper (and so every process of the step) is gone: stop its pasta.
        drop(conv.pasta.take());
        let status = status?;
        let (pumped, fed) = result;
        if conv.cancelled {
            // Killed on purpose: broken pipes and a missing result are expected.
            return Ok(conv);
        }
        pumped?;
        if let Err(e) = fed {
            if conv.setup_error.is_none() {
                return Err(self.io("streaming the layer", e));
            }
        }
        if !status.success() && conv.exited.is_none() && conv.setup_error.is_none() {
            let tail = conv.tail.clone();
            return Err(self.protocol(&format!("helper exited with {status}"), &tail));
        }
        Ok(conv)
    }

    #[allow(clippy::too_many_arguments)]
    fn pump(
        &self,
        child: &std::process::Child,
        ctl: &std::os::fd::OwnedFd,
        mut out: std::process::ChildStdout,
        mut err: std::process::ChildStderr,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        go: &mpsc::Sender<u8>,
        cancel: Option<&CancelToken>,
        conv: &mut Conversation,
    ) -> Result<(), ExecError> {
        let mut open = [true; 3];
        let mut killed_at: Option<Instant> = None;
        let timeout = match cancel {
            Some(_) => PollTimeout::from(CANCEL_POLL_MS),
            None => PollTimeout::NONE,
        };
        let mut ctl_buf: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut ctl_file =
            std::fs::File::from(ctl.try_clone().map_err(|e| self.io("control pipe", e))?);
        let mut output_error = None;
        while open.iter().any(|o| *o) {
            if let Some(t) = killed_at {
                if t.elapsed() > KILLED_GRACE {
                    tracing::warn!("a killed step still holds its output pipes; leaving them");
                    break;
                }
            } else if cancel.is_some_and(CancelToken::is_cancelled) {
                stop_step(child.id());
                conv.cancelled = true;
                killed_at = Some(Instant::now());
            }
            let mut fds = Vec::new();
            let mut which = Vec::new();
            if open[0] {
                fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
                which.push(0);
            }
            if open[1] {
                fds.push(PollFd::new(err.as_fd(), PollFlags::POLLIN));
                which.push(1);
            }
            if open[2] {
                fds.push(PollFd::new(ctl.as_fd(), PollFlags::POLLIN));
                which.push(2);
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(self.io("poll", e.into())),
            }
            let ready: Vec<usize> = fds
                .iter()
                .zip(&which)
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, w)| *w)
                .collect();
            drop(fds);
            for w in ready {
                let n = match w {
                    0 => out.read(&mut buf),
                    1 => err.read(&mut buf),
                    _ => ctl_file.read(&mut buf),
                };
                let n = match n {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.io("reading output", e)),
                };
                if n == 0 {
                    open[w] = false;
                    continue;
                }
                let data = &buf[..n];
                match w {
                    0 | 1 => {
                        conv.push_tail(data);
                        let sink: &mut dyn Write = if w == 0 { stdout } else { stderr };
                        if output_error.is_none() {
                            if let Err(e) = sink.write_all(data) {
                                output_error = Some(e);
                            }
                        }
                    }
                    _ => {
                        ctl_buf.extend_from_slice(data);
                        while let Some(i) = ctl_buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = ctl_buf.drain(..=i).collect();
                            match serde_json::from_slice::<Msg>(&line) {
                                Ok(m) => self.handle(m, child.id(), go, conv),
                                Err(_) => conv.push_tail(&line),
                            }
                        }
                        if ctl_buf.len() > 1 << 20 {
                            ctl_buf.clear();
                        }
                    }
                }
            }
        }
        let _ = stdout.flush();
        let _ = stderr.flush();
        match output_error {
            Some(e) => Err(ExecError::Output(e)),
            None => Ok(()),
        }
    }

    fn handle(&self, m: Msg, helper_pid: u32, go: &mpsc::Sender<u8>, conv: &mut Conversation) {
        match m {
            Msg::NeedMap { pid } => {
                // Only the helper itself may ask (not a process inside the container).
                let byte = if pid as u32 == helper_pid {
                    match self.mapping.write_maps(pid) {
                        Ok(()) => GO,
                        Err(e) => {
                            let w = format!(
                                "{e}; falling back to a single-id mapping: only container \
                                 root is mapped, so chown to any other id will fail"
                            );
                            tracing::warn!("{w}");
                            conv.warnings.push(w);
                            GO_SINGLE
                        }
                    }
                } else {
                    0
                };
                let _ = go.send(byte);
            }
            Msg::NeedNetwork { pid } => {
                // Only the helper itself may ask, once.
                let byte = if pid as u32 == helper_pid && !network::host_has_route_out() {
                    tracing::warn!("{}", network::NO_ROUTE_OUT);
                    conv.warnings.push(network::NO_ROUTE_OUT.into());
                    GO_NET
                } else if pid as u32 == helper_pid && conv.pasta.is_none() {
                    match Pasta::start(pid) {
                        Ok(p) => {
                            conv.pasta = Some(p);
                            GO_NET
                        }
                        Err(e) => {
                            if conv.setup_error.is_none() {
                                conv.setup_error = Some(e);
                            }
                            NO_NET
                        }
                    }
                } else {
                    NO_NET
                };
                let _ = go.send(byte);
            }
            Msg::Warning(w) => {
                tracing::warn!("{w}");
                conv.warnings.push(w);
            }
            Msg::SetupError(e) => {
                if conv.setup_error.is_none() {
                    conv.setup_error = Some(e);
                }
            }
            Msg::Exec { mono_ns } => conv.exec_mono = Some(mono_ns),
            Msg::Exited { code, signal } => conv.exited = Some((code, signal)),
            Msg::Unpacked(r) => conv.unpacked = Some(r),
            Msg::Removed => conv.removed = true,
        }
    }
}

fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Default)]
struct Conversation {
    tail_buf: Vec<u8>,
    tail: String,
    warnings: Vec<String>,
    setup_error: Option<String>,
    exec_mono: Option<u64>,
    exited: Option<(Option<i32>, Option<i32>)>,
    unpacked: Option<UnpackReport>,
    removed: bool,
    /// The step was killed because its cancel token was triggered.
    cancelled: bool,
    /// The pasta connecting the step's network namespace, stopped when the helper ends.
    pasta: Option<Pasta>,
}

impl Conversation {
    fn push_tail(&mut self, data: &[u8]) {
        self.tail_buf.extend_from_slice(data);
        if self.tail_buf.len() > TAIL_BYTES {
            let cut = self.tail_buf.len() - TAIL_BYTES;
            self.tail_buf.drain(..cut);
        }
        self.tail = String::from_utf8_lossy(&self.tail_buf).into_owned();
    }
}
