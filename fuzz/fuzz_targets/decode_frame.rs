//! Fuzz the wire frame decoder: any byte stream, split at any point, must
//! yield frames or a clean error (never a panic, never an allocation beyond
//! the frame limit), and every decoded message must re-encode and decode to
//! itself.
#![no_main]

use imgfarm_common::proto::{
    decode_message, encode_frame, FrameDecoder, Message, StreamOpen, MAX_CONTROL_FRAME,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    for part in [&data[..split], &data[split..]] {
        if decoder.push(part).is_err() {
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => {
                    if let Ok(msg) = decode_message::<Message>(&body) {
                        let again = encode_frame(&msg).expect("a decoded message re-encodes");
                        let back: Message = decode_message(&again[4..]).expect("round trip");
                        assert_eq!(back, msg);
                    }
                    let _ = decode_message::<StreamOpen>(&body);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
