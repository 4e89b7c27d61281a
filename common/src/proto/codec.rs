//! The one place that turns messages into bytes and back: bincode 2
//! (standard config, with a decode limit) inside u32 big-endian
//! length-prefixed frames.
//!
//! A frame's declared length is compared with the limit as soon as its 4
//! header bytes are known, before any buffer for the body is reserved, so a
//! hostile length costs the receiver nothing.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest control frame accepted or sent (16 MiB). Blobs never travel in
/// frames; they stream raw on their own QUIC streams.
pub const MAX_CONTROL_FRAME: u32 = 16 * 1024 * 1024;

/// Length of the frame header (u32 big-endian body length).
pub const FRAME_HEADER_LEN: usize = 4;

/// bincode configuration: standard (varint) encoding, and no single decode
/// may claim more than `MAX` bytes of memory.
fn config<const MAX: usize>() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX>,
> {
    bincode::config::standard().with_limit::<MAX>()
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The declared (or produced) frame body is larger than allowed.
    #[error(
        "frame of {len} bytes exceeds the limit of {max} bytes: the peer is broken or hostile"
    )]
    FrameTooLarge {
        /// Declared length.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// The body is not a valid bincode encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The body decoded but left bytes unread.
    #[error("malformed frame: {0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A message of ours encodes to more than the frame limit: it is not
    /// sent (the peer would have to refuse it), and nobody else is to blame.
    #[error("this message is too large to send ({len} bytes > the limit of {max} bytes)")]
    OutgoingTooLarge {
        /// Encoded body length.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// An unframed encoding ([`encode_bounded`]) came out larger than allowed.
    #[error("encoding of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Encoded length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
}

/// Encodes `msg` as one frame (header + body). Fails if the body would exceed
/// [`MAX_CONTROL_FRAME`], so we never send what the peer must refuse.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    bincode::serde::encode_into_std_write(
        msg,
        &mut out,
        config::<{ MAX_CONTROL_FRAME as usize }>(),
    )
    .map_err(|e| CodecError::Encode(e.to_string()))?;
    let body_len = out.len() - FRAME_HEADER_LEN;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= MAX_CONTROL_FRAME)
        .ok_or(CodecError::OutgoingTooLarge {
            len: body_len as u64,
            max: MAX_CONTROL_FRAME,
        })?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// The body length [`encode_frame`] would produce for `msg`, counted
/// without building the body (so a caller can refuse an oversized message
/// before spending memory on it).
pub fn encoded_len<T: Serialize>(msg: &T) -> Result<u64, CodecError> {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    bincode::serde::encode_into_std_write(msg, &mut c, config::<{ MAX_CONTROL_FRAME as usize }>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(c.0)
}

/// Checks a frame header and returns the body length it declares.
pub fn check_header(header: [u8; FRAME_HEADER_LEN], max: u32) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(CodecError::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    Ok(len as usize)
}

/// Decodes one frame body (without its header) into a message.
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    decode_bounded::<T, { MAX_CONTROL_FRAME as usize }>(body)
}

/// Encodes `value` without a frame header, for bincode files on disk (the
/// build context's digest cache); fails beyond `MAX` bytes.
pub fn encode_bounded<T: Serialize, const MAX: usize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    bincode::serde::encode_into_std_write(value, &mut out, config::<MAX>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if out.len() > MAX {
        return Err(CodecError::Oversized {
            len: out.len() as u64,
            max: MAX as u64,
        });
    }
    Ok(out)
}

/// Decodes the whole of `body` (no frame header), claiming at most `MAX`
/// bytes of memory; bytes left over are an error.
pub fn decode_bounded<T: DeserializeOwned, const MAX: usize>(body: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::serde::decode_from_slice(body, config::<MAX>())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes(body.len() - used));
    }
    Ok(msg)
}

/// A push-style frame splitter: feed it bytes as they arrive, take whole
/// frame bodies out. Pure (no I/O), used by the fuzz target and the tests;
/// the async reader in [`super::io`] applies the same header check.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: u32,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max` bytes.
    pub fn new(max: u32) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes. Fails at once when a buffered header declares
    /// an oversized frame, so the body is never accumulated.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        self.buf.extend_from_slice(bytes);
        if let Some(header) = self.header() {
            check_header(header, self.max)?;
        }
        Ok(())
    }

    fn header(&self) -> Option<[u8; FRAME_HEADER_LEN]> {
        self.buf
            .get(..FRAME_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
    }

    /// Takes the next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        let Some(header) = self.header() else {
            return Ok(None);
        };
        let len = check_header(header, self.max)?;
        let end = FRAME_HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        if let Some(next) = self.header() {
            check_header(next, self.max)?;
        }
        Ok(Some(body))
    }

    /// Takes and decodes the next complete message, if one is buffered.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match self.next_frame()? {
            Some(body) => decode_message(&body).map(Some),
            None => Ok(None),
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Message;

    #[test]
    fn round_trip_one_frame() {
        let frame = encode_frame(&Message::Bye).unwrap();
        let mut d = FrameDecoder::new(MAX_CONTROL_FRAME);
        d.push(&frame[..2]).unwrap();
        assert!(d.next_frame().unwrap().is_none());
        d.push(&frame[2..]).unwrap();
        assert_eq!(d.next_message::<Message>().unwrap(), Some(Message::Bye));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_header_is_refused_before_the_body() {
        let mut d = FrameDecoder::new(1024);
        let err = d.push(&1025u32.to_be_bytes()).unwrap_err();
        assert!(matches!(
            err,
            CodecError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut frame = encode_frame(&Message::Bye).unwrap();
        frame.push(0);
        let err = decode_message::<Message>(&frame[FRAME_HEADER_LEN..]).unwrap_err();
        assert!(matches!(err, CodecError::TrailingBytes(1)));
    }

    #[test]
    fn unknown_variant_is_malformed() {
        let err = decode_message::<Message>(&[200]).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    }

    #[test]
    fn bounded_round_trip_and_limits() {
        let v: Vec<u32> = (0..100).collect();
        let bytes = encode_bounded::<_, 1024>(&v).unwrap();
        assert_eq!(decode_bounded::<Vec<u32>, 1024>(&bytes).unwrap(), v);
        assert!(matches!(
            encode_bounded::<_, 16>(&v),
            Err(CodecError::Oversized { max: 16, .. })
        ));
        // A declared length beyond the limit is refused before allocating.
        assert!(matches!(
            decode_bounded::<Vec<u32>, 16>(&bytes),
            Err(CodecError::Malformed(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_bounded::<Vec<u32>, 1024>(&long),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn encode_refuses_an_oversized_message() {
        let log = Message::VertexLog(crate::proto::VertexLog {
            vertex_key: crate::oci::Digest::sha256_of(b"k"),
            stream: 1,
            data: vec![0; MAX_CONTROL_FRAME as usize + 1],
        });
        let err = encode_frame(&log).unwrap_err();
        assert!(matches!(err, CodecError::OutgoingTooLarge { .. }), "{err}");
        // Our own frame: the message says so and blames no peer.
        let msg = err.to_string();
        assert!(msg.contains("too large to send"), "{msg}");
        assert!(!msg.contains("peer"), "{msg}");
        assert!(encoded_len(&log).unwrap() > u64::from(MAX_CONTROL_FRAME));
    }

    #[test]
    fn encoded_len_matches_the_frame() {
        for m in [
            Message::Bye,
            Message::Submit(crate::proto::Submit {
                platforms: vec!["linux/amd64".into()],
                definition: vec![7; 1000],
                context: Vec::new(),
                output: vec![1, 2, 3],
                reattach: None,
            }),
        ] {
            let frame = encode_frame(&m).unwrap();
            assert_eq!(
                encoded_len(&m).unwrap(),
                (frame.len() - FRAME_HEADER_LEN) as u64
            );
        }
    }
}
