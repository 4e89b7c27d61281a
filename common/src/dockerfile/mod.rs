//! The Dockerfile frontend, following BuildKit's `frontend/dockerfile`.
//!
//! - [`ast`]: the parse tree (BuildKit's `parser.Node`).
//! - [`parser`]: bytes → [`ast::Node`], with directives, continuations and heredocs.
//! - [`error`]: the located error type every stage of the frontend returns.
//! - [`dump`]: the tree → BuildKit's test dump format.
//! - [`shell`]: shell word expansion (BuildKit's `shell.Lex`).
//! - [`expand`]: instruction word expansion with the names used and missing.
//! - [`instructions`]: typed instructions, stages and their semantics.
//! - [`stages`]: stage resolution, global ARGs, targets and pruning.
//! - [`ignore`]: `.dockerignore` matching with Docker's rules.
//! - [`frontend`]: instruction dispatch, producing the build graph ([`crate::graph`]).

pub mod ast;
pub mod dump;
pub mod error;
pub mod expand;
pub mod frontend;
pub mod ignore;
pub mod instructions;
pub mod parser;
pub mod shell;
pub mod stages;
