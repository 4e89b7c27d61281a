//! Canonical JSON exactly as Go's `encoding/json` writes it, because the
//! digests of our configs, manifests and indexes must not depend on hash map
//! order and should match what BuildKit produces for the same content.
//!
//! Go's rules, reproduced here:
//! - struct fields in declaration order (serde already does this);
//! - map keys sorted (bytewise) — oci-spec stores annotations in `HashMap`s,
//!   so plain `serde_json` would give a random order;
//! - `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`..., control
//!   characters as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX` (lowercase hex);
//! - `MarshalIndent` puts `"key": value` on its own line and writes empty
//!   arrays/objects as `[]`/`{}`.

use serde::ser::{self, Serialize};
use std::fmt::Display;

/// A value that could not be turned into JSON (a non-string map key, a NaN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode as canonical JSON: {0}")]
pub struct JsonError(pub String);

impl ser::Error for JsonError {
    fn custom<T: Display>(msg: T) -> Self {
        JsonError(msg.to_string())
    }
}

/// An ordered JSON tree: objects keep struct order; maps were sorted when built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
}

impl Node {
    /// Move `key` to the front of a top-level object, keeping the others'
    /// order. BuildKit wraps `ocispecs.Manifest`/`Index` in a struct whose
    /// first field is `mediaType`, so its manifests start with `mediaType`.
    pub(crate) fn move_to_front(&mut self, key: &str) {
        if let Node::Obj(fields) = self {
            if let Some(pos) = fields.iter().position(|(k, _)| k == key) {
                let f = fields.remove(pos);
                fields.insert(0, f);
            }
        }
    }
}

/// Compact canonical JSON (Go `json.Marshal`).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JsonError> {
    Ok(write_node(&to_node(value)?, None))
}

/// Indented canonical JSON (Go `json.MarshalIndent(v, "", indent)`).
pub fn to_vec_indent<T: Serialize + ?Sized>(value: &T, indent: &str) -> Result<Vec<u8>, JsonError> {
    Ok(write_node(&to_node(value)?, Some(indent)))
}

pub(crate) fn to_node<T: Serialize + ?Sized>(value: &T) -> Result<Node, JsonError> {
    value.serialize(TreeSerializer)
}

pub(crate) fn write_node(node: &Node, indent: Option<&str>) -> Vec<u8> {
    let mut out = String::new();
    write_into(&mut out, node, indent, 0);
    out.into_bytes()
}

fn newline(out: &mut String, indent: &str, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str(indent);
    }
}

fn write_into(out: &mut String, node: &Node, indent: Option<&str>, depth: usize) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => out.push_str(&i.to_string()),
        Node::Uint(u) => out.push_str(&u.to_string()),
        Node::Float(f) => out.push_str(
            &serde_json::Number::from_f64(*f).map_or_else(|| "null".to_string(), |n| n.to_string()),
        ),
        Node::Str(s) => write_string(out, s),
        Node::Arr(items) => {
            out.push('[');
            if !items.is_empty() {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(ind) = indent {
                        newline(out, ind, depth + 1);
                    }
                    write_into(out, item, indent, depth + 1);
                }
                if let Some(ind) = indent {
                    newline(out, ind, depth);
                }
            }
            out.push(']');
        }
        Node::Obj(fields) => {
            out.push('{');
            if !fields.is_empty() {
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(ind) = indent {
                        newline(out, ind, depth + 1);
                    }
                    write_string(out, k);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    write_into(out, v, indent, depth + 1);
                }
                if let Some(ind) = indent {
                    newline(out, ind, depth);
                }
            }
            out.push('}');
        }
    }
}

/// Go's `encoding/json` string escaping with `EscapeHTML` on (the default).
fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A serde `Serializer` that builds a [`Node`] tree, sorting map entries.
struct TreeSerializer;

struct SeqBuilder(Vec<Node>);
struct VariantSeqBuilder(&'static str, Vec<Node>);
struct MapBuilder {
    entries: Vec<(String, Node)>,
    next_key: Option<String>,
}
struct StructBuilder(Vec<(String, Node)>);
struct VariantStructBuilder(&'static str, Vec<(String, Node)>);

impl ser::Serializer for TreeSerializer {
    type Ok = Node;
    type Error = JsonError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = VariantSeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = VariantStructBuilder;

    fn serialize_bool(self, v: bool) -> Result<Node, JsonError> {
        Ok(Node::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Node, JsonError> {
        Ok(Node::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Node, JsonError> {
        Ok(Node::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Node, JsonError> {
        Ok(Node::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Node, JsonError> {
        Ok(Node::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Node, JsonError> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Node, JsonError> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Node, JsonError> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Node, JsonError> {
        Ok(Node::Uint(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Node, JsonError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Node, JsonError> {
        if v.is_finite() {
            Ok(Node::Float(v))
        } else {
            Err(JsonError(format!("unsupported float {v}")))
        }
    }
    fn serialize_char(self, v: char) -> Result<Node, JsonError> {
        Ok(Node::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Node, JsonError> {
        Ok(Node::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node, JsonError> {
        Ok(Node::Arr(
            v.iter().map(|b| Node::Uint((*b).into())).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Node, JsonError> {
        Ok(Node::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, JsonError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Node, JsonError> {
        Ok(Node::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Node, JsonError> {
        Ok(Node::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Node, JsonError> {
        Ok(Node::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Node, JsonError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Node, JsonError> {
        Ok(Node::Obj(vec![(variant.to_string(), to_node(value)?)]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, JsonError> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0).min(1024))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, JsonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, JsonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantSeqBuilder, JsonError> {
        Ok(VariantSeqBuilder(variant, Vec::new()))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder, JsonError> {
        Ok(MapBuilder {
            entries: Vec::new(),
            next_key: None,
        })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<StructBuilder, JsonError> {
        Ok(StructBuilder(Vec::new()))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantStructBuilder, JsonError> {
        Ok(VariantStructBuilder(variant, Vec::new()))
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.0.push(to_node(value)?);
        Ok(())
    }
    fn end(self) -> Result<Node, JsonError> {
        Ok(Node::Arr(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Node, JsonError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Node, JsonError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for VariantSeqBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.1.push(to_node(value)?);
        Ok(())
    }
    fn end(self) -> Result<Node, JsonError> {
        Ok(Node::Obj(vec![(self.0.to_string(), Node::Arr(self.1))]))
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), JsonError> {
        let key = match to_node(key)? {
            Node::Str(s) => s,
            Node::Int(i) => i.to_string(),
            Node::Uint(u) => u.to_string(),
            other => {
                return Err(JsonError(format!(
                    "map key must be a string, got {other:?}"
                )))
            }
        };
        self.next_key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        let key = self
            .next_key
            .take()
            .ok_or_else(|| JsonError("map value without a key".into()))?;
        self.entries.push((key, to_node(value)?));
        Ok(())
    }
    fn end(mut self) -> Result<Node, JsonError> {
        // Go sorts map keys bytewise; Rust's str ordering is bytewise too.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.entries.dedup_by(|a, b| a.0 == b.0);
        Ok(Node::Obj(self.entries))
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.0.push((key.to_string(), to_node(value)?));
        Ok(())
    }
    fn end(self) -> Result<Node, JsonError> {
        Ok(Node::Obj(self.0))
    }
}

impl ser::SerializeStructVariant for VariantStructBuilder {
    type Ok = Node;
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.1.push((key.to_string(), to_node(value)?));
        Ok(())
    }
    fn end(self) -> Result<Node, JsonError> {
        Ok(Node::Obj(vec![(self.0.to_string(), Node::Obj(self.1))]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(serde::Serialize)]
    struct Doc {
        z: u32,
        a: HashMap<String, String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        empty: Vec<u8>,
        list: Vec<String>,
    }

    fn doc() -> Doc {
        let mut a = HashMap::new();
        for k in ["b", "a", "c", "aa"] {
            a.insert(k.to_string(), format!("<{k}&>"));
        }
        Doc {
            z: 1,
            a,
            empty: vec![],
            list: vec![],
        }
    }

    #[test]
    fn struct_order_kept_map_sorted_html_escaped() {
        let s = String::from_utf8(to_vec(&doc()).unwrap()).unwrap();
        assert_eq!(
            s,
            r#"{"z":1,"a":{"a":"\u003ca\u0026\u003e","aa":"\u003caa\u0026\u003e","b":"\u003cb\u0026\u003e","c":"\u003cc\u0026\u003e"},"list":[]}"#
        );
    }

    #[test]
    fn indent_matches_go_marshal_indent() {
        #[derive(serde::Serialize)]
        struct D {
            a: Vec<u8>,
            b: Vec<u8>,
            c: HashMap<String, u8>,
        }
        let s = to_vec_indent(
            &D {
                a: vec![1, 2],
                b: vec![],
                c: HashMap::new(),
            },
            "   ",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "{\n   \"a\": [\n      1,\n      2\n   ],\n   \"b\": [],\n   \"c\": {}\n}"
        );
    }

    #[test]
    fn control_characters_escaped_like_go() {
        let s = String::from_utf8(to_vec("a\u{1}\n\t\u{8}\u{2028}\"\\").unwrap()).unwrap();
        assert_eq!(s, r#""a\u0001\n\t\b\u2028\"\\""#);
    }

    #[test]
    fn non_string_map_keys_are_refused() {
        let mut m = HashMap::new();
        m.insert(vec![1u8], 1u8);
        assert!(to_vec(&m).is_err());
    }

    proptest::proptest! {
        #[test]
        fn output_is_valid_json_with_the_same_content(
            m in proptest::collection::hash_map(".{0,8}", ".{0,12}", 0..8),
            v in proptest::collection::vec(proptest::num::i64::ANY, 0..4),
        ) {
            #[derive(serde::Serialize)]
            struct D<'a> { m: &'a HashMap<String, String>, v: &'a Vec<i64> }
            let d = D { m: &m, v: &v };
            for bytes in [to_vec(&d).unwrap(), to_vec_indent(&d, "  ").unwrap()] {
                let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                proptest::prop_assert_eq!(&back, &serde_json::to_value(&d).unwrap());
            }
            // Deterministic whatever the HashMap's iteration order.
            let copy: HashMap<String, String> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            proptest::prop_assert_eq!(to_vec(&D { m: &copy, v: &v }).unwrap(), to_vec(&d).unwrap());
        }
    }
}
