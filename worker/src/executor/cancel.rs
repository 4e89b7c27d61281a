//! Cancelling a running step.
//!
//! A [`CancelToken`] is shared between whoever may cancel (the farm session
//! on `CancelVertex`) and the thread running the step, which polls it while it
//! pumps the step's output. On cancel that thread stops the step itself: it
//! still owns the helper as an unreaped child, so no pid it signals can have
//! been reused.
//!
//! Process layout (see [`super`]): the helper unshares the pid namespace and
//! forks the step's pid 1, which execs the command. The helper is *not* the
//! namespace's init, and pid 1's parent-death signal is cleared when it
//! switches to a non-root `USER`, so killing the helper alone could leave the
//! step running. [`stop_step`] therefore freezes the helper (SIGSTOP, so it
//! cannot fork pid 1 after the children are listed), SIGKILLs its children
//! (pid 1: the kernel then kills every process of the namespace), and
//! SIGKILLs the helper.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long [`stop_step`] waits for the helper to stop before listing its
/// children anyway.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// A shared cancel flag. Clones share it; the default token is never
/// triggered unless [`CancelToken::cancel`] is called on one of its clones.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trigger it: a step running with this token (or started later with it)
    /// is killed, and its run ends with a cancelled error. Idempotent.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The state letter and parent pid in a `/proc/<pid>/stat` line
/// (`pid (comm) S ppid ...`; `comm` may hold spaces and parentheses, so the
/// fields are read after the last `)`).
pub(crate) fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn stat_of(pid: i32) -> Option<(char, i32)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The children of `pid`: `/proc/<pid>/task/<pid>/children` when the kernel
/// has it, else a scan of `/proc` for processes whose parent is `pid`.
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return s
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| stat_of(*p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Kills the step whose helper is `helper` (an unreaped child of the caller,
/// so its pid and its children's pids are stable while it is stopped). The
/// caller then reaps the helper as usual. Every step process dies: the
/// helper's child is the init of the step's pid namespace.
pub(crate) fn stop_step(helper: u32) {
    let Ok(raw) = i32::try_from(helper) else {
        return;
    };
    let pid = Pid::from_raw(raw);
    if kill(pid, Signal::SIGSTOP).is_ok() {
        let t0 = Instant::now();
        // 'T' stopped, 'Z'/'X' already exited (its step ended with it).
        while !matches!(stat_of(raw), None | Some(('T' | 't' | 'Z' | 'X', _))) {
            if t0.elapsed() > STOP_WAIT {
                tracing::warn!("executor helper {raw} did not stop; killing it anyway");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for child in children_of(raw) {
        if let Err(e) = kill(Pid::from_raw(child), Signal::SIGKILL) {
            tracing::warn!("killing step init {child} of helper {raw}: {e}");
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_token_is_shared_by_its_clones_and_starts_untriggered() {
        let t = CancelToken::new();
        let seen_by_runner = t.clone();
        assert!(!seen_by_runner.is_cancelled());
        assert!(!CancelToken::default().is_cancelled());
        t.cancel();
        assert!(seen_by_runner.is_cancelled());
        t.cancel();
        assert!(t.is_cancelled());
        assert!(!CancelToken::new().is_cancelled(), "a new token is its own");
    }

    #[test]
    fn stat_lines_are_read_after_the_command_name() {
        assert_eq!(parse_stat("42 (sleep) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("9 (a) b) (c) T 1 9"), Some(('T', 1)));
        assert_eq!(parse_stat("9 (x) Z"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn stop_step_kills_the_child_tree_of_a_process() {
        // A stand-in helper: a shell whose child sleeps (it plays the step's
        // pid 1). Both must be gone afterwards.
        let mut helper = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let hp = i32::try_from(helper.id()).expect("pid");
        let t0 = Instant::now();
        let sleeper = loop {
            if let Some(c) = children_of(hp).first() {
                break *c;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no child appeared");
            std::thread::sleep(Duration::from_millis(10));
        };
        stop_step(helper.id());
        let status = helper.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // The orphaned sleeper is killed too (reaped by init or a zombie).
        let t0 = Instant::now();
        while stat_of(sleeper).is_some_and(|(s, _)| s != 'Z' && s != 'X') {
            assert!(t0.elapsed() < Duration::from_secs(5), "sleep survived");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
