//! Whiteout names (image spec "Whiteouts") and overlayfs markers.
//!
//! - A file `.wh.<name>` in a layer deletes `<name>` from lower layers.
//! - `.wh..wh..opq` in a directory makes it opaque: lower layers' content of
//!   that directory is hidden.
//! - overlayfs marks a deleted file in the upper dir with a character device
//!   0/0 (or, on newer kernels, an xattr `*.overlay.whiteout`) and an opaque
//!   dir with `trusted.overlay.opaque=y` (`user.overlay.opaque=y` rootless).

/// Prefix of a whiteout file name.
pub const PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE: &str = ".wh..wh..opq";

/// The name a whiteout for `name` gets in a layer.
pub fn whiteout_name(name: &[u8]) -> Vec<u8> {
    let mut out = PREFIX.as_bytes().to_vec();
    out.extend_from_slice(name);
    out
}

/// Classifies a layer entry's base name.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    /// Not a whiteout.
    None,
    /// `.wh..wh..opq`.
    Opaque,
    /// `.wh.<name>` for this name.
    Remove(&'a [u8]),
    /// Some other `.wh..wh.` name: reserved by the spec, ignored.
    Reserved,
}

/// What a layer entry name means (image spec "Whiteouts").
pub fn classify(base: &[u8]) -> Marker<'_> {
    if base == OPAQUE.as_bytes() {
        return Marker::Opaque;
    }
    if base.starts_with(b".wh..wh.") {
        return Marker::Reserved;
    }
    match base.strip_prefix(PREFIX.as_bytes()) {
        Some(rest) if !rest.is_empty() && rest != b"." && rest != b".." => Marker::Remove(rest),
        Some(_) => Marker::Reserved,
        None => Marker::None,
    }
}

/// overlayfs xattrs that mark opaque directories.
pub const OVERLAY_OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
/// overlayfs xattrs that mark a whiteout file (kernel ≥ 6.7 "xwhiteouts").
pub const OVERLAY_WHITEOUT_XATTRS: [&str; 2] =
    ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// Whether an xattr belongs to overlayfs itself and must not enter a layer
/// (or be applied from one).
pub fn is_overlay_private_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_markers() {
        assert_eq!(classify(b".wh..wh..opq"), Marker::Opaque);
        assert_eq!(classify(b".wh.foo"), Marker::Remove(b"foo"));
        assert_eq!(classify(b".wh..."), Marker::Reserved);
        assert_eq!(classify(b".wh."), Marker::Reserved);
        assert_eq!(classify(b".wh..wh.plnk"), Marker::Reserved);
        assert_eq!(classify(b"foo"), Marker::None);
        assert_eq!(whiteout_name(b"x"), b".wh.x");
    }
}
