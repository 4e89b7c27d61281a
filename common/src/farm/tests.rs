use super::*;
use crate::graph::op::{ContextOp, Op};

fn context_vertex(n: u8) -> Vertex {
    Vertex::new(
        None,
        Op::Context(ContextOp {
            sources: vec![format!("f{n}")],
            excludes: vec![],
            selection: Digest::sha256_of(&[n]),
        }),
        vec![],
        format!("context {n}"),
        0,
    )
}

fn definition() -> FarmDefinition {
    let a = context_vertex(1);
    let b = context_vertex(2);
    FarmDefinition {
        targets: vec![FarmTarget {
            platform: "linux/amd64".into(),
            export: b.key.clone(),
        }],
        vertices: vec![a, b],
        context: None,
        title: "t".into(),
    }
}

#[test]
fn definition_round_trips_and_validates() {
    let d = definition();
    d.validate().unwrap();
    let back: FarmDefinition = decode(&encode(&d), "build definition").unwrap();
    assert_eq!(back, d);
}

#[test]
fn bad_definitions_say_what_is_wrong() {
    let mut d = definition();
    d.targets[0].export = Digest::sha256_of(b"nothing");
    assert!(d
        .validate()
        .unwrap_err()
        .to_string()
        .contains("not a vertex"));

    let mut d = definition();
    d.vertices.push(d.vertices[0].clone());
    assert!(d.validate().unwrap_err().to_string().contains("twice"));

    let mut d = definition();
    let first = d.vertices[0].key.clone();
    d.vertices[1].inputs.push(Digest::sha256_of(b"later"));
    d.vertices[0].inputs.push(first);
    assert!(d
        .validate()
        .unwrap_err()
        .to_string()
        .contains("before it is defined"));

    let mut d = definition();
    d.targets[0].platform = "linux/".into();
    assert!(d.validate().is_err());

    let e = decode::<FarmDefinition>(b"{not json", "build definition").unwrap_err();
    assert!(e.to_string().starts_with("malformed build definition"));
    let big = vec![b' '; MAX_PAYLOAD + 1];
    let e = decode::<FarmDefinition>(&big, "build definition").unwrap_err();
    assert!(e.to_string().contains("over the"));
}

#[test]
fn credentials_never_show_in_debug_output() {
    let c = RegistryCredential {
        host: "reg".into(),
        username: "u".into(),
        secret: "hunter2".into(),
    };
    let text = format!(
        "{:?}",
        OutputSpec {
            credentials: vec![c],
            ..Default::default()
        }
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn result_lists_each_blob_once() {
    let l = LayerRef {
        digest: Digest::sha256_of(b"l"),
        diff_id: Digest::sha256_of(b"d"),
        size: 1,
        media_type: "m".into(),
    };
    let r = VertexResult {
        chain: vec![l.clone()],
        delta: vec![l.clone()],
        base_config: Some(Digest::sha256_of(b"c")),
        ..Default::default()
    };
    assert_eq!(r.blobs(), vec![l.digest, Digest::sha256_of(b"c")]);
}

fn chunk(n: u8) -> LayerRef {
    LayerRef {
        digest: Digest::sha256_of(&[n]),
        diff_id: Digest::sha256_of(&[n, n]),
        size: u64::from(n) * 100,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

#[test]
fn context_chunks_round_trip_and_name_the_context() {
    let c = ContextBlob {
        chunks: vec![chunk(1), chunk(2), chunk(3)],
    };
    let mut d = definition();
    d.context = Some(c.clone());
    d.validate().unwrap();
    let back: FarmDefinition = decode(&encode(&d), "build definition").unwrap();
    assert_eq!(back.context.as_ref(), Some(&c));
    assert_eq!(c.size(), 600);

    // The id follows the chunk digests and their order, nothing else.
    let same = ContextBlob {
        chunks: vec![chunk(1), chunk(2), chunk(3)],
    };
    assert_eq!(c.id(), same.id());
    let swapped = ContextBlob {
        chunks: vec![chunk(2), chunk(1), chunk(3)],
    };
    assert_ne!(c.id(), swapped.id());
    let empty = ContextBlob { chunks: vec![] };
    assert_ne!(empty.id(), c.id());
    empty.validate().unwrap();
}

#[test]
fn a_stored_single_layer_context_still_decodes() {
    // What a coordinator before chunked contexts kept in coordinator.db.
    let layer = serde_json::to_value(chunk(7)).unwrap();
    let old = serde_json::json!({ "layer": layer });
    let c: ContextBlob = serde_json::from_value(old).unwrap();
    assert_eq!(c.chunks, vec![chunk(7)]);

    let both = serde_json::json!({ "layer": layer, "chunks": [layer] });
    let e = serde_json::from_value::<ContextBlob>(both).unwrap_err();
    assert!(e.to_string().contains("both chunks and a layer"), "{e}");
    let e = serde_json::from_value::<ContextBlob>(serde_json::json!({})).unwrap_err();
    assert!(e.to_string().contains("no chunks"), "{e}");
}

#[test]
fn too_many_context_chunks_are_refused() {
    let mut d = definition();
    d.context = Some(ContextBlob {
        chunks: vec![chunk(1); chunks::MAX_CONTEXT_CHUNKS + 1],
    });
    let e = d.validate().unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "invalid build context: {} chunks, over the limit of {}",
            chunks::MAX_CONTEXT_CHUNKS + 1,
            chunks::MAX_CONTEXT_CHUNKS
        )
    );
}
