//! OCI content: the content-addressed store, layers, image types, OCI layout
//! and index merge (OCI image spec v1.1).
