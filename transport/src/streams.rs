//! QUIC streams as the chunked blob reader and writer of
//! `imgfarm_common::proto::blob` (chunks handed over without a copy).

use imgfarm_common::proto::blob::{Bytes, ChunkRecv, ChunkSend};

/// A QUIC receive stream handing out its buffered chunks without a copy.
#[derive(Debug)]
pub struct QuicRecv<'a>(pub &'a mut quinn::RecvStream);

impl ChunkRecv for QuicRecv<'_> {
    async fn recv_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        Ok(self.0.read_chunk(max, true).await?.map(|c| c.bytes))
    }
}

/// A QUIC send stream taking ownership of chunks (no copy into its buffer).
#[derive(Debug)]
pub struct QuicSend<'a>(pub &'a mut quinn::SendStream);

impl ChunkSend for QuicSend<'_> {
    async fn send_chunk(&mut self, chunk: Bytes) -> std::io::Result<()> {
        Ok(self.0.write_chunk(chunk).await?)
    }
}
