//! The Dockerfile frontend, following BuildKit's `frontend/dockerfile`.
//!
//! - [`ast`]: the parse tree (BuildKit's `parser.Node`).
//! - [`parser`]: bytes → [`ast::Node`], with directives, continuations and heredocs.
//! - [`error`]: the located error type every stage of the frontend returns.
//! - [`dump`]: the tree → BuildKit's test dump format.
//! - [`shell`]: shell word expansion (BuildKit's `shell.Lex`).
//! - [`instructions`]: typed instructions, stages and their semantics.
//! - [`stages`]: stage resolution, global ARGs, targets and pruning.
//! - [`ignore`]: `.dockerignore` matching with Docker's rules.

pub mod ast;
pub mod dump;
pub mod error;
pub mod ignore;
pub mod instructions;
pub mod parser;
pub mod shell;
pub mod stages;
