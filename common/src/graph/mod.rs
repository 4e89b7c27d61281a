//! The multi-platform build graph: vertices are ops, edges are inputs, and
//! each vertex has a content-derived cache key.
