//! Inputs a step reads besides its stage's root: base images (`FROM`,
//! `COPY --from=image`, `--mount from=image`), earlier stages, and
//! selections of the build context (addressed by the digest of exactly the
//! files they select).

use super::stage::{err, PlatformBuild, StageState};
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::instructions::Instruction;
use crate::dockerfile::stages::{resolve_from, FromRef};
use crate::graph::image_config::StageConfig;
use crate::graph::op::{ContextOp, ImageOp, Op};
use crate::graph::Vertex;
use crate::oci::Digest;
use crate::platform::Platform;

impl PlatformBuild<'_, '_> {
    /// The vertex of base image `reference` for `platform`, and its config
    /// when the request resolved it beforehand.
    pub(super) fn image_vertex(
        &mut self,
        reference: &str,
        platform: &Platform,
        desc: String,
        line: usize,
    ) -> (Digest, Option<StageConfig>) {
        let resolved = self
            .req
            .resolved_images
            .get(&(reference.to_string(), platform.clone()));
        let op = Op::Image(ImageOp {
            reference: reference.to_string(),
            digest: resolved.map(|r| r.digest.clone()),
        });
        let key = self.graph.insert(Vertex::new(
            Some(platform.clone()),
            op,
            Vec::new(),
            desc,
            line,
        ));
        (key, resolved.map(|r| r.config.clone()))
    }

    /// A stage's root (or an image's) as an input, for --from and mount from=.
    pub(super) fn source_input(
        &mut self,
        st: &StageState,
        ins: &Instruction,
        value: &str,
        states: &[Option<StageState>],
    ) -> Result<Option<Digest>, DockerfileError> {
        match resolve_from(value, self.by_name, self.plan.stages.len(), ins)? {
            FromRef::Stage(s) => {
                let src = states.get(s).and_then(|x| x.as_ref()).ok_or_else(|| {
                    err(
                        ErrorKind::UnknownStage,
                        ins,
                        format!("stage {value:?} must be defined before it is used"),
                    )
                })?;
                Ok(src.root.clone())
            }
            FromRef::Image(r) => {
                let desc = format!("[{}] load {r}", st.name);
                Ok(Some(self.image_vertex(&r, &st.platform, desc, ins.line).0))
            }
        }
    }

    /// The vertex of the context files `sources` select, minus `excludes`
    /// (each selection is hashed once per build).
    pub(super) fn context_vertex(
        &mut self,
        ins: &Instruction,
        sources: Vec<String>,
        excludes: Vec<String>,
    ) -> Result<Digest, DockerfileError> {
        let cache_key = (sources.clone(), excludes.clone());
        let selection = match self.ctx_cache.get(&cache_key) {
            Some(d) => d.clone(),
            None => {
                let d = self.req.context.select(&sources, &excludes).map_err(|e| {
                    err(ErrorKind::BadArguments, ins, format!("build context: {e}"))
                })?;
                self.ctx_cache.insert(cache_key, d.clone());
                d
            }
        };
        let desc = format!("[context] {}", sources.join(" "));
        let op = Op::Context(ContextOp {
            sources,
            excludes,
            selection,
        });
        Ok(self
            .graph
            .insert(Vertex::new(None, op, Vec::new(), desc, ins.line)))
    }
}
