//! Property tests of the frame codec: decoding hostile bytes never panics,
//! and every message survives an encode/decode round trip.

use imgfarm_common::identity::Role;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{
    decode_message, encode_frame, BlobHeader, CacheSummary, FrameDecoder, Heartbeat, Hello,
    Message, RunVertex, StreamOpen, Submit, VertexDone, VertexLog, MAX_CONTROL_FRAME,
};
use proptest::prelude::*;

fn digest() -> impl Strategy<Value = Digest> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Digest::sha256_of(&b))
}

fn header() -> impl Strategy<Value = BlobHeader> {
    (digest(), any::<u64>()).prop_map(|(digest, size)| BlobHeader { digest, size })
}

/// A vertex key named by `seed`.
fn key(seed: &str) -> Digest {
    Digest::sha256_of(seed.as_bytes())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Coordinator),
        Just(Role::Worker),
        Just(Role::Client)
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u32>(),
        role(),
        ".{0,20}",
        proptest::collection::vec("[a-z]{1,8}/[a-z0-9]{1,8}", 0..4),
        proptest::collection::vec("[a-z]{1,8}/[a-z0-9]{1,8}", 0..4),
        any::<u32>(),
        any::<u64>(),
        proptest::collection::vec("[0-9a-f]{64}", 0..3),
    )
        .prop_map(
            |(version, role, name, native, emulated, slots, bytes, keys)| Hello {
                version,
                role,
                name: name.clone(),
                software: format!("imgfarm {name}"),
                native_platforms: native,
                emulated_platforms: emulated,
                slots,
                cache_summary: CacheSummary {
                    bytes,
                    entries: keys.len() as u64,
                    keys: keys.iter().map(|k| key(k)).collect(),
                },
                entitlements: Default::default(),
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::Bye),
        Just(Message::StatusRequest),
        ".{0,40}".prop_map(Message::Refused),
        (any::<u64>(), any::<u32>()).prop_map(|(seq, slots_in_use)| Message::Heartbeat(
            Heartbeat {
                seq,
                slots_in_use,
                cache_summary: None
            }
        )),
        (
            ".{0,20}",
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(vertex_key, stream, data)| Message::VertexLog(VertexLog {
                vertex_key: key(&vertex_key),
                stream,
                data
            })),
        (
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
            ".{0,20}"
        )
            .prop_map(|(k, payload, ok, err)| Message::VertexDone(VertexDone {
                vertex_key: key(&k),
                result: if ok { Ok(payload) } else { Err(err) },
                duration_ms: 7,
            })),
        (
            ".{0,20}",
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(header(), 0..3)
        )
            .prop_map(|(k, emulated, op, inputs)| Message::RunVertex(RunVertex {
                build_id: "b1".into(),
                vertex_key: key(&k),
                platform: "linux/arm64".into(),
                emulated,
                op,
                inputs,
            })),
        (
            proptest::collection::vec(header(), 0..3),
            proptest::option::of(".{0,10}")
        )
            .prop_map(|(context, reattach)| Message::Submit(Submit {
                platforms: vec!["linux/amd64".into()],
                definition: vec![1, 2, 3],
                context,
                output: vec![],
                reattach,
            })),
        header().prop_map(Message::BlobOffer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_message::<Message>(&bytes);
        let _ = decode_message::<StreamOpen>(&bytes);
        let mut d = FrameDecoder::new(MAX_CONTROL_FRAME);
        if d.push(&bytes).is_ok() {
            while let Ok(Some(_)) = d.next_message::<Message>() {}
        }
    }

    #[test]
    fn message_round_trip(msg in message()) {
        let frame = encode_frame(&msg).unwrap();
        let mut d = FrameDecoder::new(MAX_CONTROL_FRAME);
        d.push(&frame).unwrap();
        prop_assert_eq!(d.next_message::<Message>().unwrap(), Some(msg));
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn stream_open_round_trip(h in hello(), b in header()) {
        for open in [StreamOpen::Control(h.clone()), StreamOpen::BlobPut(b.clone())] {
            let frame = encode_frame(&open).unwrap();
            prop_assert_eq!(decode_message::<StreamOpen>(&frame[4..]).unwrap(), open);
        }
    }

    #[test]
    fn frames_split_anywhere(msgs in proptest::collection::vec(message(), 1..5), cut in 0usize..4096) {
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m).unwrap()).collect();
        let cut = cut.min(bytes.len());
        let mut d = FrameDecoder::new(MAX_CONTROL_FRAME);
        let mut out = Vec::new();
        for part in [&bytes[..cut], &bytes[cut..]] {
            d.push(part).unwrap();
            while let Some(m) = d.next_message::<Message>().unwrap() {
                out.push(m);
            }
        }
        prop_assert_eq!(out, msgs);
    }
}

#[test]
fn a_bad_digest_string_is_refused_by_decoding() {
    // A BlobOffer whose digest text is not a valid sha256 digest.
    #[derive(serde::Serialize)]
    enum Fake {
        #[allow(dead_code)]
        A,
        #[allow(dead_code)]
        B,
        #[allow(dead_code)]
        C,
        #[allow(dead_code)]
        D,
        #[allow(dead_code)]
        E,
        #[allow(dead_code)]
        F,
        #[allow(dead_code)]
        G,
        BlobOffer {
            digest: String,
            size: u64,
        },
    }
    let frame = encode_frame(&Fake::BlobOffer {
        digest: "sha256:../../etc/passwd".into(),
        size: 1,
    })
    .unwrap();
    assert!(decode_message::<Message>(&frame[4..]).is_err());
}
