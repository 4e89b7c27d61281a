//! The boundary to the rootless executor (worker/src/executor, owned by the
//! executor work): the solver hands it a RUN with its lower layers and mount
//! sources, and gets back the layer made from the overlay upper dir (the
//! executor makes it inside its user namespace, where owners are right).

use super::result::{LayerRef, VertexResult};
pub use crate::executor::CancelToken;
use imgfarm_common::graph::op::ExecOp;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::platform::Platform;
use std::path::Path;

/// One RUN to execute.
pub struct ExecRequest<'a> {
    /// Where layers live (and where the new layer goes).
    pub store: &'a ContentStore,
    /// The root filesystem, bottom layer first (empty = scratch).
    pub lower: &'a [LayerRef],
    /// The process, env, cwd, user, mounts, network.
    pub op: &'a ExecOp,
    /// Results of the vertex's inputs, in the op's input order (mount sources).
    pub inputs: &'a [VertexResult],
    /// The build context directory (bind mounts from the context).
    pub context_dir: Option<&'a Path>,
    /// The platform the process is for.
    pub platform: &'a Platform,
    /// True when it runs under emulation (qemu via binfmt).
    pub emulated: bool,
    /// Triggered to stop the RUN: its processes are killed and the run
    /// fails with [`ExecFailure::Cancelled`].
    pub cancel: &'a CancelToken,
}

/// A RUN that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ExecFailure {
    /// The process exited non-zero.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}\n{tail}")]
    Exit {
        /// argv joined.
        command: String,
        /// Exit code.
        code: i32,
        /// Last lines of its output.
        tail: String,
    },
    /// Setting up or tearing down the sandbox failed.
    #[error("{0}")]
    Setup(String),
    /// The RUN's cancel token was triggered: its processes were killed and
    /// its work dirs removed; it has no result (nothing to cache or upload).
    #[error("cancelled: the RUN's processes were killed")]
    Cancelled,
}

/// Runs RUN steps rootlessly. `log` gets the process output as it comes;
/// `req.cancel` stops a running step.
pub trait StepExecutor: Send + Sync {
    /// Run `req`; return the layer of its filesystem changes.
    fn run(
        &self,
        req: &ExecRequest<'_>,
        log: &mut dyn FnMut(&[u8]),
    ) -> Result<LayerRef, ExecFailure>;

    /// Drops what the executor holds open between steps (the snapshotter
    /// and its shared lease), so a collection can take the snapshots'
    /// exclusive lock; the next step opens them again.
    fn release_snapshots(&self) {}
}
