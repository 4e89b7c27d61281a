//! The boundary between a scheduler and whatever runs a vertex (the
//! embedded worker in-process, a farm worker's job runner).

use imgfarm_common::farm::VertexResult;
use imgfarm_common::oci::Digest;

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
    ) -> Result<VertexResult, String>;
}
