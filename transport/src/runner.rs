//! The boundary between a scheduler and whatever runs a vertex (the
//! embedded worker in-process, a farm worker's job runner).

use imgfarm_common::farm::VertexResult;
use imgfarm_common::oci::Digest;

/// Why a vertex produced no result: the one error every runner returns.
/// Its text is what the engine reports for the vertex (and what crosses the
/// wire in `VertexDone`); the cause stays reachable through `source()`.
#[derive(Debug, thiserror::Error)]
pub enum VertexError {
    /// The runner has no such vertex.
    #[error("vertex {0} is not in the build graph")]
    Unknown(Digest),
    /// Solving the vertex failed: the solver's error, with its causes.
    #[error(transparent)]
    Solve(Box<dyn std::error::Error + Send + Sync>),
    /// Solving an input the vertex reads failed.
    #[error("input {key} ({description}): {source}")]
    Input {
        /// The input.
        key: Digest,
        /// Its progress line.
        description: String,
        /// Why.
        #[source]
        source: Box<VertexError>,
    },
    /// The vertex's step failed, named by its progress line.
    #[error("{description}: {source}")]
    Step {
        /// The step's line.
        description: String,
        /// Why.
        #[source]
        source: Box<VertexError>,
    },
}

impl VertexError {
    /// Wraps a solver error, keeping it as the source.
    pub fn solve(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        VertexError::Solve(Box::new(e))
    }
}

/// What a worker does with one vertex: produce its result (and keep it
/// where the coordinator's exporter can find it: the shared content store
/// and result cache). `log` receives process output as it comes.
pub trait VertexRunner: Send + Sync + 'static {
    /// Run `key` to its result; `emulated` says the scheduler chose
    /// emulation for it.
    fn run(
        &self,
        key: &Digest,
        emulated: bool,
        log: &mut dyn FnMut(&[u8]),
    ) -> Result<VertexResult, VertexError>;
}
