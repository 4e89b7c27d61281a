//! Messages between the executor (caller side) and its helper process.
//!
//! caller → helper, on the helper's stdin: a little-endian `u32` length and a JSON
//! [`HelperRequest`]; for a full id mapping, one byte after the maps are written ([`GO`], or
//! [`GO_SINGLE`] when newuidmap failed and the helper must map itself); for a step with an
//! isolated network, one byte after pasta connected its namespace ([`GO_NET`], anything
//! else: it could not); for an unpack job, then the layer stream until EOF.
//! helper → caller, on fd 3: newline-delimited JSON [`Msg`]s (each under `PIPE_BUF`, so
//! writes from the helper and the container's pid 1 do not interleave).

use super::run::UnpackReport;
use super::ExecRequest;
use crate::idmap::IdMapping;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Largest request frame.
pub const MAX_FRAME: u32 = 16 << 20;
/// The fd of the control channel in the helper.
pub const CTL_FD: i32 = 3;
/// Continue: the maps are written.
pub const GO: u8 = b'G';
/// Continue with a self-written single-id mapping.
pub const GO_SINGLE: u8 = b'S';
/// Continue: the step's network namespace is connected.
pub const GO_NET: u8 = b'N';
/// Stop: the step's network namespace could not be connected (the caller has the error).
pub const NO_NET: u8 = b'X';
/// Longest text in a message.
const MAX_TEXT: usize = 3000;

/// What the helper does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Run a step.
    Run {
        /// The step.
        request: Box<ExecRequest>,
        /// The seccomp programs pid 1 installs before exec, in order, each encoded by
        /// [`super::seccomp::encode`]; empty when `request.sandbox.seccomp` is false.
        seccomp: Vec<Vec<u64>>,
    },
    /// Unpack the layer streamed on stdin into `dest`, over `parents` (lowest first)
    /// through an overlay mounted in `scratch`, so whiteouts become overlay whiteouts.
    Unpack {
        /// Target dir (becomes the layer's snapshot dir).
        dest: PathBuf,
        /// Parent layer dirs, lowest first.
        parents: Vec<PathBuf>,
        /// Scratch dir for the overlay work dir and mount point.
        scratch: PathBuf,
    },
    /// Delete a tree.
    Remove {
        /// The tree.
        path: PathBuf,
    },
}

/// The request frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperRequest {
    /// The job.
    pub job: Job,
    /// The id mapping to set up.
    pub mapping: IdMapping,
}

/// A message from the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// The user namespace exists: write the maps of this pid, then send [`GO`].
    NeedMap {
        /// Helper pid.
        pid: i32,
    },
    /// The step's network namespace exists (the helper's): connect it (pasta), then send
    /// [`GO_NET`].
    NeedNetwork {
        /// Helper pid.
        pid: i32,
    },
    /// A warning for the user.
    Warning(String),
    /// Setup failed.
    SetupError(String),
    /// The command is about to be exec'd (CLOCK_MONOTONIC, ns).
    Exec {
        /// Timestamp.
        mono_ns: u64,
    },
    /// The command ended.
    Exited {
        /// Exit code.
        code: Option<i32>,
        /// Killing signal.
        signal: Option<i32>,
    },
    /// An unpack job finished.
    Unpacked(UnpackReport),
    /// A remove job finished.
    Removed,
}

impl Msg {
    /// Encode as one line, truncating long texts.
    pub fn line(&self) -> Vec<u8> {
        let cut = |s: &str| {
            let mut s = s.to_string();
            if s.len() > MAX_TEXT {
                let mut i = MAX_TEXT;
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                s.truncate(i);
                s.push_str("...");
            }
            s
        };
        let m = match self {
            Msg::Warning(s) => Msg::Warning(cut(s)),
            Msg::SetupError(s) => Msg::SetupError(cut(s)),
            other => other.clone(),
        };
        let mut v = serde_json::to_vec(&m).unwrap_or_else(|_| b"\"Removed\"".to_vec());
        v.push(b'\n');
        v
    }
}

/// Write a frame.
pub fn write_frame(w: &mut dyn Write, req: &HelperRequest) -> std::io::Result<()> {
    let body = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("request larger than 16 MiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Read a frame.
pub fn read_frame(r: &mut dyn Read) -> std::io::Result<HelperRequest> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::other("request frame too large"));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_limits() {
        let req = HelperRequest {
            job: Job::Remove { path: "/x".into() },
            mapping: IdMapping::Single { uid: 1, gid: 2 },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).expect("write");
        let back = read_frame(&mut buf.as_slice()).expect("read");
        assert!(matches!(back.job, Job::Remove { .. }));
        let mut big = (MAX_FRAME + 1).to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(read_frame(&mut big.as_slice()).is_err());
    }

    #[test]
    fn long_messages_are_cut_below_pipe_buf() {
        let line = Msg::SetupError("é".repeat(5000)).line();
        assert!(line.len() < 4096);
        let m: Msg = serde_json::from_slice(&line).expect("json");
        assert!(matches!(m, Msg::SetupError(s) if s.ends_with("...")));
    }
}
