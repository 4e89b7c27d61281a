//! Reading a layer blob's uncompressed stream, the one rule every reader uses (unpacking,
//! stage views, COPY --from, exports, ADD of a local archive).
//!
//! The image spec's layer media types are `tar`, `tar+gzip` and `tar+zstd` (OCI image-spec,
//! "Image Layer Filesystem Changeset"). A gzip file "consists of a series of members"
//! (RFC 1952 §2.2), and imgfarm writes large layers as one member per chunk, so gzip is
//! always read to the end of the stream, member after member, as `gzip -d` does; a reader
//! that stopped after the first member would see a truncated tar.

use super::Compression;
use std::io::{self, BufRead, BufReader, Read};

/// The first bytes of a gzip member (RFC 1952 §2.3.1: ID1, ID2).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The zstd frame magic number (RFC 8878 §3.1.1), little-endian.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Read-ahead of the decompressing readers.
const BUF: usize = 256 * 1024;

/// The compression a blob starting with `head` uses: gzip or zstd by magic number, else
/// none (a plain tar).
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader of the uncompressed stream of `r`, compressed with `compression`.
pub fn decoder<'a>(
    compression: Compression,
    r: impl BufRead + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// A reader of the uncompressed stream of `r`, its compression told by its first bytes
/// ([`sniff`]).
pub fn sniffed<'a>(mut r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = Vec::with_capacity(ZSTD_MAGIC.len());
    (&mut r)
        .take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut head)?;
    let compression = sniff(&head);
    let stream = BufReader::with_capacity(BUF, io::Cursor::new(head).chain(r));
    decoder(compression, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_gzip_member_is_read() {
        let mut blob = gzip(b"first ");
        blob.extend(gzip(b"second "));
        blob.extend(gzip(b"third"));
        let mut out = String::new();
        sniffed(&blob[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first second third");
    }

    #[test]
    fn plain_zstd_and_short_inputs_are_told_apart() {
        let mut out = Vec::new();
        sniffed(&b"ab"[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
        let z = zstd::encode_all(&b"zstd body"[..], 1).unwrap();
        let mut out = Vec::new();
        sniffed(&z[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"zstd body");
        assert_eq!(sniff(&[]), Compression::None);
    }
}
