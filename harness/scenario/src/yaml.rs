//! A YAML document as a tree that remembers where every node came from.
//!
//! Scenario files are decoded in two steps: serde-saphyr parses the text into
//! a [`Node`] tree (every node keeps its byte span), variants are applied to
//! that tree as JSON merge patches (patched nodes keep the span of the patch),
//! and only then is the tree decoded into the typed structs through
//! [`NodeDeserializer`]. Because the decoder walks the tree, every serde error
//! — unknown field, wrong type, bad unit — carries the span of the node it
//! came from, in the base document or inside a variant's patch alike.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A byte range in the scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.offset, s.len).into()
    }
}

/// One YAML node and where it is in the file. For mappings and sequences the
/// span is the key that owns them (or their first character for the root),
/// which is where a reader looks for "missing field" errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key (always a string in scenario files) and its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// One step of a path into the document: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A YAML syntax error with its place.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

impl Node {
    pub fn new(value: Value, span: Span) -> Self {
        Node { span, value }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The value under `key` if this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key under which `key` is stored, for errors about the key itself.
    pub fn key(&self, key: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    /// Removes and returns the entry under `key`.
    pub fn take(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(entries) => {
                let i = entries.iter().position(|(k, _)| k.name == key)?;
                Some(entries.remove(i).1)
            }
            _ => None,
        }
    }

    /// The deepest node along `path` (the node itself when the path is
    /// empty or its first step does not exist). Used to point validation
    /// errors at the value they are about, or at the nearest thing that
    /// exists when the value is missing.
    pub fn locate(&self, path: &[Seg]) -> Span {
        let mut node = self;
        for seg in path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.span
    }

    /// The span of the key at the end of `path`, falling back to
    /// [`Node::locate`] when there is no such key.
    pub fn locate_key(&self, path: &[Seg]) -> Span {
        if let Some((Seg::Key(last), parent)) = path.split_last() {
            let mut node = self;
            let mut found = true;
            for seg in parent {
                let next = match (seg, &node.value) {
                    (Seg::Key(k), Value::Map(_)) => node.get(k),
                    (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                    _ => None,
                };
                match next {
                    Some(n) => node = n,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if found {
                if let Some(k) = node.key(last) {
                    return k.span;
                }
            }
        }
        self.locate(path)
    }

    /// The tree as plain JSON (for raw manifest patches and for hashing).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Applies `patch` to `target` with JSON merge patch semantics (RFC 7386):
/// mappings merge key by key, `null` deletes a key, anything else replaces.
/// Replaced and added nodes keep the patch's spans, so errors in them point
/// at the variant that wrote them.
pub fn merge_patch(target: &mut Node, patch: &Node) {
    let Value::Map(patch_entries) = &patch.value else {
        *target = patch.clone();
        return;
    };
    if !matches!(target.value, Value::Map(_)) {
        *target = Node::new(Value::Map(Vec::new()), patch.span);
    }
    let Value::Map(entries) = &mut target.value else {
        unreachable!("target was just made a mapping");
    };
    for (key, value) in patch_entries {
        let existing = entries.iter().position(|(k, _)| k.name == key.name);
        match (existing, value.is_null()) {
            (Some(i), true) => {
                entries.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_patch(&mut entries[i].1, value),
            (None, false) => {
                let mut fresh = Node::new(Value::Null, value.span);
                merge_patch(&mut fresh, value);
                entries.push((key.clone(), fresh));
            }
        }
    }
}

/// The most YAML nodes (after alias expansion) a scenario file may make.
pub const MAX_YAML_NODES: usize = 50_000;

/// Parses one YAML document into a tree with byte spans.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    // `yes`/`no`/`on`/`off` stay strings: a scenario means what it says.
    // A node budget well above any scenario (1000 variants with patches
    // fit) but far below the parser's default of 250,000, which a YAML
    // bomb spends a second reaching.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! { max_nodes: MAX_YAML_NODES },
    };
    let raw: Spanned<RawNode> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let span = e.location().map(|l| span_of(text, &l)).unwrap_or_default();
            let inner = e.without_snippet().to_string();
            if inner.starts_with("budget breached") {
                return SyntaxError {
                    message: format!(
                        "the file expands to more YAML than a scenario can be: aliases that repeat aliases (a \"YAML bomb\") multiply their size ({})",
                        inner.split(" at line ").next().unwrap_or(&inner)
                    ),
                    span,
                };
            }
            SyntaxError {
                message: strip_position(&inner).to_owned(),
                span,
            }
        })?;
    Ok(convert(text, raw, None))
}

/// The span already says where: drop a trailing "at line L, column C" —
/// only at the very end, so a message that names other positions (an alias
/// "defined at line …") is kept whole rather than cut mid-sentence.
fn strip_position(message: &str) -> &str {
    let Some(i) = message.rfind(" at line ") else {
        return message;
    };
    let tail = &message[i + " at line ".len()..];
    let is_position = tail.split_once(", column ").is_some_and(|(l, c)| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_digit())
            && !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_digit())
    });
    if is_position {
        &message[..i]
    } else {
        message
    }
}

fn span_of(text: &str, loc: &serde_saphyr::Location) -> Span {
    let s = loc.span();
    let sentinel = u32::MAX as u64;
    match (s.byte_offset(), s.byte_len()) {
        (Some(o), Some(l)) if o != sentinel && l != sentinel => Span {
            offset: (o as usize).min(text.len()),
            len: l as usize,
        },
        _ => {
            // Only character positions are known: convert them to bytes.
            let start = char_to_byte(text, s.offset() as usize);
            let end = char_to_byte(text, (s.offset() + s.len()) as usize);
            Span {
                offset: start,
                len: end.saturating_sub(start),
            }
        }
    }
}

fn char_to_byte(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map(|(b, _)| b)
        .unwrap_or(text.len())
}

fn convert(text: &str, raw: Spanned<RawNode>, owner: Option<Span>) -> Node {
    let own = span_of(text, &raw.referenced);
    match raw.value {
        RawNode::Null => Node::new(Value::Null, own),
        RawNode::Bool(b) => Node::new(Value::Bool(b), own),
        RawNode::Int(i) => Node::new(Value::Int(i), own),
        RawNode::UInt(u) => Node::new(Value::UInt(u), own),
        RawNode::Float(f) => Node::new(Value::Float(f), own),
        RawNode::Str(s) => Node::new(Value::Str(s), own),
        RawNode::Seq(items) => Node::new(
            Value::Seq(items.into_iter().map(|i| convert(text, i, None)).collect()),
            owner.unwrap_or(own),
        ),
        RawNode::Map(entries) => Node::new(
            Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let key_span = span_of(text, &k.referenced);
                        (
                            Key {
                                name: k.value,
                                span: key_span,
                            },
                            convert(text, v, Some(key_span)),
                        )
                    })
                    .collect(),
            ),
            owner.unwrap_or(own),
        ),
    }
}

/// What serde-saphyr hands us; converted to [`Node`] right away.
enum RawNode {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawNode>>),
    Map(Vec<(Spanned<String>, Spanned<RawNode>)>),
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawNode, E> {
                Ok(RawNode::Null)
            }
            fn visit_none<E>(self) -> Result<RawNode, E> {
                Ok(RawNode::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawNode, D::Error> {
                RawNode::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawNode, E> {
                Ok(RawNode::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<RawNode, E> {
                Ok(RawNode::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<RawNode, E> {
                Ok(match i64::try_from(u) {
                    Ok(i) => RawNode::Int(i),
                    Err(_) => RawNode::UInt(u),
                })
            }
            fn visit_i128<E: de::Error>(self, i: i128) -> Result<RawNode, E> {
                i64::try_from(i)
                    .map(RawNode::Int)
                    .map_err(|_| E::custom(format!("integer {i} is too large")))
            }
            fn visit_u128<E: de::Error>(self, u: u128) -> Result<RawNode, E> {
                u64::try_from(u)
                    .map(RawNode::UInt)
                    .map_err(|_| E::custom(format!("integer {u} is too large")))
            }
            fn visit_f64<E>(self, f: f64) -> Result<RawNode, E> {
                Ok(RawNode::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<RawNode, E> {
                Ok(RawNode::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<RawNode, E> {
                Ok(RawNode::Str(s))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawNode, E> {
                Err(E::custom(
                    "binary values are not supported in scenario files",
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RawNode, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(RawNode::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<RawNode, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry::<Spanned<KeyString>, Spanned<RawNode>>()? {
                    let (k, v) = entry;
                    entries.push((Spanned::new(k.value.0, k.referenced, k.defined), v));
                }
                Ok(RawNode::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping key; numbers and booleans are accepted and spelled as text
/// so `200: ok` style keys (e.g. in headers) do not fail to parse.
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, s: &str) -> Result<KeyString, E> {
                Ok(KeyString(s.to_string()))
            }
            fn visit_bool<E>(self, b: bool) -> Result<KeyString, E> {
                Ok(KeyString(b.to_string()))
            }
            fn visit_i64<E>(self, i: i64) -> Result<KeyString, E> {
                Ok(KeyString(i.to_string()))
            }
            fn visit_u64<E>(self, u: u64) -> Result<KeyString, E> {
                Ok(KeyString(u.to_string()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<KeyString, E> {
                Ok(KeyString(f.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyString, E> {
                Ok(KeyString("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A decoding error from the tree: the message, where, and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub message: String,
    pub help: Option<String>,
    pub span: Option<Span>,
    /// Set for unknown fields, so a variant can say it "patches" the field.
    pub unknown_field: Option<String>,
}

impl DeError {
    fn or_at(mut self, span: Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            help: None,
            span: None,
            unknown_field: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let (message, help) = unknown("field", field, expected);
        DeError {
            message,
            help: Some(help),
            span: None,
            unknown_field: Some(field.to_string()),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let (message, help) = unknown("value", variant, expected);
        DeError {
            message,
            help: Some(help),
            span: None,
            unknown_field: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            message: format!("missing field `{field}`"),
            help: Some(format!("add `{field}:` here")),
            span: None,
            unknown_field: None,
        }
    }
}

/// The closest of `expected` to `got`, if it is close enough to be a typo.
pub fn suggest<'a>(got: &str, expected: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    expected
        .into_iter()
        .map(|e| (strsim::jaro_winkler(got, e), e))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| e)
}

fn unknown(what: &str, got: &str, expected: &[&str]) -> (String, String) {
    let list = expected
        .iter()
        .map(|e| format!("`{e}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let help = if expected.is_empty() {
        format!("this place takes no {what}s")
    } else {
        format!("expected one of {list}")
    };
    match suggest(got, expected.iter().copied()) {
        Some(s) => (format!("unknown {what} `{got}`, did you mean `{s}`?"), help),
        None => (format!("unknown {what} `{got}`"), help),
    }
}

/// Decodes a typed value from a [`Node`], attaching spans to every error.
pub fn from_node<'de, T: Deserialize<'de>>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer { node })
}

pub struct NodeDeserializer<'a> {
    node: &'a Node,
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.or_at(span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.or_at(span))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.or_at(span))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe {
                key: &entries[0].0,
                value: &entries[0].1,
            }),
            _ => Err(de::Error::custom(format!(
                "expected one of the names listed in the docs, found {}",
                describe(self.node)
            ))),
        }
        .map_err(|e| e.or_at(span))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

/// How a node reads in an error message ("a mapping", "the string `x`").
pub fn describe(node: &Node) -> String {
    match &node.value {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Int(i) => format!("the number `{i}`"),
        Value::UInt(u) => format!("the number `{u}`"),
        Value::Float(f) => format!("the number `{f}`"),
        Value::Str(s) => format!("the string `{s}`"),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDeserializer { node })
                .map(Some)
                .map_err(|e| e.or_at(node.span)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.name.as_str().into_deserializer())
                    .map(Some)
                    .map_err(|e: DeError| e.or_at(key.span))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value without a key"))?;
        seed.deserialize(NodeDeserializer { node })
            .map_err(|e| e.or_at(node.span))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumDe<'a> {
    key: &'a Key,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDeserializer<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let v = seed
            .deserialize(self.key.name.as_str().into_deserializer())
            .map_err(|e: DeError| e.or_at(self.key.span))?;
        Ok((v, NodeDeserializer { node: self.value }))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.node.is_null() {
            Ok(())
        } else {
            Err(<DeError as de::Error>::custom("this name takes no value").or_at(self.node.span))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct T {
        rate: String,
        #[serde(default)]
        keep_alive: bool,
    }

    fn at(text: &str, span: Span) -> &str {
        &text[span.offset..span.offset + span.len]
    }

    #[test]
    fn unknown_fields_point_at_the_key_and_suggest() {
        let text = "a:\n  rat: 5/s\n";
        let root = parse(text).unwrap();
        let err = from_node::<T>(root.get("a").unwrap()).unwrap_err();
        assert_eq!(err.message, "unknown field `rat`, did you mean `rate`?");
        assert_eq!(at(text, err.span.unwrap()), "rat");
    }

    #[test]
    fn missing_fields_point_at_the_owning_key() {
        let text = "x: 1\na:\n  keepAlive: true\n";
        let root = parse(text).unwrap();
        let err = from_node::<T>(root.get("a").unwrap()).unwrap_err();
        assert_eq!(err.message, "missing field `rate`");
        assert_eq!(at(text, err.span.unwrap()), "a");
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let text = "a:\n  rate: x\n  keepAlive: maybe\n";
        let root = parse(text).unwrap();
        let err = from_node::<T>(root.get("a").unwrap()).unwrap_err();
        assert_eq!(at(text, err.span.unwrap()), "maybe");
    }

    #[test]
    fn merge_patch_follows_rfc7386_and_keeps_patch_spans() {
        let base = parse("a: {b: 1, c: 2}\nd: [1, 2]\n").unwrap();
        let patch_text = "a: {b: null, e: 3}\nd: [9]\nf: x\n";
        let patch = parse(patch_text).unwrap();
        let mut merged = base.clone();
        merge_patch(&mut merged, &patch);
        assert_eq!(
            merged.to_json(),
            serde_json::json!({"a": {"c": 2, "e": 3}, "d": [9], "f": "x"})
        );
        assert_eq!(at(patch_text, merged.locate(&["f".into()])), "x");
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let text = "a: [1\nb: 2\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.span.offset > 0 && err.span.offset <= text.len(),
            "{err:?}"
        );
        assert!(!err.message.contains(" at line "), "{}", err.message);
    }

    #[test]
    fn yes_is_a_string_not_a_boolean() {
        let root = parse("a: yes\n").unwrap();
        assert_eq!(root.get("a").unwrap().value, Value::Str("yes".into()));
    }
}
