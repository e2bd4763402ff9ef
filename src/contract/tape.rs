//! A record parsed onto a tape: serde_json's own parser writes one flat vector of slots whose
//! strings point into the payload, and the contract's draft-07 rules run on it in place through
//! jsonschema's custom-representation API (`jsonschema::json`).
//!
//! Parsing into a `serde_json::Value` allocates a map node, a key and a string per field and
//! frees them all again: two thirds of a valid payment event's cost (docs/benchmarks.md). A tape
//! is reused from record to record, so a valid record allocates nothing unless a string holds
//! escapes.
//!
//! Same verdicts as the `Value` path by construction: the same parser (syntax, UTF-8, numbers,
//! nesting limit, trailing characters) and the same compiled keywords. The one difference
//! between the two forms, a key repeated in an object (a `Value` keeps the last), is not
//! represented: [`Tape::parse`] refuses such a record and the caller takes the `Value` path.

use std::borrow::Cow;
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object, cmp};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One JSON value, or an object member's name, in document order. A container is followed by
/// its members (name, value) or elements and records where its subtree ends.
#[derive(Debug, Clone)]
pub(crate) enum Slot<'i> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'i, str>),
    Arr { len: u32, end: u32 },
    Obj { len: u32, end: u32 },
    Key(Cow<'i, str>),
}

/// Why a payload is not on the tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not well-formed JSON (the `Value` path reports the parser's message).
    Syntax,
    /// An object repeats a key.
    DuplicateKey,
}

/// A reusable tape for records borrowed from payloads that live at least `'i`.
#[derive(Debug, Default)]
pub struct Tape<'i> {
    slots: Vec<Slot<'i>>,
    /// Member-name slots of the objects being parsed, innermost last (duplicate check).
    names: Vec<u32>,
    /// Set when parsing stopped at a repeated key.
    duplicate: bool,
}

/// Objects with at most this many members are checked for a repeated key pairwise; larger ones
/// by sorting their names.
const PAIRWISE: usize = 16;

impl<'i> Tape<'i> {
    /// An empty tape.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `payload` onto the tape, replacing what it held.
    pub fn parse(&mut self, payload: &'i [u8]) -> Result<(), Refused> {
        self.slots.clear();
        self.names.clear();
        self.duplicate = false;
        let mut de = serde_json::Deserializer::from_slice(payload);
        if (Fill { tape: self }).deserialize(&mut de).is_err() {
            return Err(if self.duplicate { Refused::DuplicateKey } else { Refused::Syntax });
        }
        de.end().map_err(|_| Refused::Syntax)
    }

    /// The record's root, once [`Tape::parse`] succeeded.
    pub fn root(&self) -> Option<TapeNode<'_>> {
        (!self.slots.is_empty()).then_some(TapeNode { slots: &self.slots, at: 0 })
    }

    #[inline]
    fn push(&mut self, slot: Slot<'i>) -> Result<usize, serde_json::Error> {
        let at = self.slots.len();
        if u32::try_from(at).is_err() {
            return Err(serde_json::Error::custom("record too large for a tape"));
        }
        self.slots.push(slot);
        Ok(at)
    }

    fn end(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// Whether the member names pushed since `from` repeat one.
    fn repeats(&self, from: usize) -> bool {
        let names = &self.names[from..];
        let name = |i: &u32| match &self.slots[*i as usize] {
            Slot::Key(k) => k.as_ref(),
            _ => "",
        };
        if names.len() <= PAIRWISE {
            return names.iter().enumerate().any(|(n, a)| names[n + 1..].iter().any(|b| name(a) == name(b)));
        }
        let mut sorted: Vec<&str> = names.iter().map(name).collect();
        sorted.sort_unstable();
        sorted.windows(2).any(|w| w[0] == w[1])
    }
}

/// Writes one value (and everything under it) onto the tape.
struct Fill<'t, 'i> {
    tape: &'t mut Tape<'i>,
}

impl<'de, 't> DeserializeSeed<'de> for Fill<'t, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn lift<E: serde::de::Error>(e: serde_json::Error) -> E {
    E::custom(e)
}

impl<'de, 't> Visitor<'de> for Fill<'t, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.tape.push(Slot::Bool(v)).map(drop).map_err(lift)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.tape.push(Slot::Num(Number::from(v))).map(drop).map_err(lift)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.tape.push(Slot::Num(Number::from(v))).map(drop).map_err(lift)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // As `Value` does: a float with no JSON form (the parser never yields one) is null.
        let slot = Number::from_f64(v).map_or(Slot::Null, Slot::Num);
        self.tape.push(slot).map(drop).map_err(lift)
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<(), E> {
        self.tape.push(Slot::Str(Cow::Borrowed(v))).map(drop).map_err(lift)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.tape.push(Slot::Str(Cow::Owned(v.to_owned()))).map(drop).map_err(lift)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.tape.push(Slot::Str(Cow::Owned(v))).map(drop).map_err(lift)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.tape.push(Slot::Null).map(drop).map_err(lift)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.tape.push(Slot::Arr { len: 0, end: 0 }).map_err(lift)?;
        let mut len = 0_u32;
        while seq.next_element_seed(Fill { tape: &mut *self.tape })?.is_some() {
            len = len.saturating_add(1);
        }
        let end = self.tape.end();
        self.tape.slots[at] = Slot::Arr { len, end };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.tape.push(Slot::Obj { len: 0, end: 0 }).map_err(lift)?;
        let first_name = self.tape.names.len();
        let mut len = 0_u32;
        while map.next_key_seed(Name { tape: &mut *self.tape })?.is_some() {
            map.next_value_seed(Fill { tape: &mut *self.tape })?;
            len = len.saturating_add(1);
        }
        if self.tape.repeats(first_name) {
            self.tape.duplicate = true;
            return Err(A::Error::custom("an object repeats a key"));
        }
        self.tape.names.truncate(first_name);
        let end = self.tape.end();
        self.tape.slots[at] = Slot::Obj { len, end };
        Ok(())
    }
}

/// Writes an object member's name.
struct Name<'t, 'i> {
    tape: &'t mut Tape<'i>,
}

impl<'de, 't> DeserializeSeed<'de> for Name<'t, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 't> Name<'t, 'de> {
    fn key<E: serde::de::Error>(self, key: Cow<'de, str>) -> Result<(), E> {
        let at = self.tape.push(Slot::Key(key)).map_err(lift)?;
        self.tape.names.push(u32::try_from(at).unwrap_or(u32::MAX));
        Ok(())
    }
}

impl<'de, 't> Visitor<'de> for Name<'t, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<(), E> {
        self.key(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.key(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.key(Cow::Owned(v))
    }
}

/// The representation's marker for `jsonschema::options_for`.
#[derive(Debug)]
pub struct TapeJson;

/// A one-slot tape for a member name checked as a string (`propertyNames`).
#[derive(Debug, Default)]
pub struct NameBuffer(Vec<Slot<'static>>);

/// One value on a tape.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
}

impl fmt::Debug for TapeNode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// Index of the slot after the value at `at`.
fn after(slots: &[Slot<'_>], at: usize) -> usize {
    match slots[at] {
        Slot::Arr { end, .. } | Slot::Obj { end, .. } => end as usize,
        _ => at + 1,
    }
}

impl<'a> TapeNode<'a> {
    fn slot(&self) -> &'a Slot<'a> {
        &self.slots[self.at]
    }

    /// The member `name` of an object (`None` for anything else).
    pub fn get(&self, name: &str) -> Option<TapeNode<'a>> {
        Node::<TapeJson>::as_object(self)?.find(name)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&'a str> {
        match self.slot() {
            Slot::Str(s) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<&'a Number> {
        match self.slot() {
            Slot::Num(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self.slot(), Slot::Obj { .. })
    }

    /// Whether this is `null`.
    pub fn is_null_value(&self) -> bool {
        matches!(self.slot(), Slot::Null)
    }

    /// The same value as a `serde_json::Value` (error reports, tests).
    pub fn value(&self) -> Value {
        match self.slot() {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(*b),
            Slot::Num(n) => Value::Number(n.clone()),
            Slot::Str(s) | Slot::Key(s) => Value::String(s.as_ref().to_owned()),
            Slot::Arr { .. } => Value::Array(TapeArray { slots: self.slots, at: self.at }.elements().map(|e| e.value()).collect()),
            Slot::Obj { .. } => {
                let mut map = Map::new();
                for (k, v) in (TapeObject { slots: self.slots, at: self.at }).members() {
                    let _ = map.insert(k.to_owned(), v.value());
                }
                Value::Object(map)
            }
        }
    }
}

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = NameBuffer;

    // A lookup scans the members, so one members pass always beats several lookups.
    const KEYS_PER_LOOKUP: usize = 1 << 20;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(buffer: &mut NameBuffer, string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        buffer.0.clear();
        buffer.0.push(Slot::Str(Cow::Owned(string.to_owned())));
        f(TapeNode { slots: &buffer.0, at: 0 })
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        matches!(self.slot(), Slot::Obj { .. }).then_some(TapeObject { slots: self.slots, at: self.at })
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        matches!(self.slot(), Slot::Arr { .. }).then_some(TapeArray { slots: self.slots, at: self.at })
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        TapeNode::as_number(self)
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.slot() {
            Slot::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        self.is_null_value()
    }

    fn json_type(&self) -> JsonType {
        match self.slot() {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::Num(_) => JsonType::Number,
            Slot::Str(_) | Slot::Key(_) => JsonType::String,
            Slot::Arr { .. } => JsonType::Array,
            Slot::Obj { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` on scalars without building a `Value`.
        match (self.slot(), expected) {
            (Slot::Str(s), Value::String(e)) => s.as_ref() == e.as_str(),
            (Slot::Num(n), Value::Number(e)) => cmp::equal_numbers(&n, e),
            (Slot::Bool(b), Value::Bool(e)) => b == e,
            (Slot::Null, Value::Null) => true,
            (Slot::Arr { .. } | Slot::Obj { .. }, _) => cmp::equal(&self.value(), expected),
            _ => false,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.value())
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(self.slots.as_ptr() as usize, u32::try_from(self.at).unwrap_or(u32::MAX)))
    }
}

/// An object on a tape.
#[derive(Debug, Clone, Copy)]
pub struct TapeObject<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
}

impl<'a> TapeObject<'a> {
    fn find(&self, name: &str) -> Option<TapeNode<'a>> {
        self.members().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// Members of an object on a tape, in document order.
#[derive(Debug)]
pub struct Members<'a> {
    slots: &'a [Slot<'a>],
    next: usize,
    left: u32,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = match &self.slots[self.next] {
            Slot::Key(k) => k.as_ref(),
            _ => "",
        };
        let value = self.next + 1;
        self.next = after(self.slots, value);
        Some((name, TapeNode { slots: self.slots, at: value }))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        match self.slots[self.at] {
            Slot::Obj { len, .. } => len as usize,
            _ => 0,
        }
    }

    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        self.find(key)
    }

    fn members(&self) -> Members<'a> {
        Members { slots: self.slots, next: self.at + 1, left: u32::try_from(Object::len(self)).unwrap_or(u32::MAX) }
    }
}

/// An array on a tape.
#[derive(Debug, Clone, Copy)]
pub struct TapeArray<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
}

/// Elements of an array on a tape.
#[derive(Debug)]
pub struct Elements<'a> {
    slots: &'a [Slot<'a>],
    next: usize,
    left: u32,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.next;
        self.next = after(self.slots, at);
        Some(TapeNode { slots: self.slots, at })
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        match self.slots[self.at] {
            Slot::Arr { len, .. } => len as usize,
            _ => 0,
        }
    }

    fn elements(&self) -> Elements<'a> {
        Elements { slots: self.slots, next: self.at + 1, left: u32::try_from(Array::len(self)).unwrap_or(u32::MAX) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> Result<Value, Refused> {
        let mut tape = Tape::new();
        tape.parse(text.as_bytes())?;
        Ok(tape.root().map(|r| r.value()).unwrap_or(Value::Null))
    }

    #[test]
    fn a_tape_reads_back_as_the_value_serde_json_parses() -> Result<(), Refused> {
        for text in [
            r#"{"a":1,"b":[true,null,-2,3.5,"x\u00e9\n"],"c":{"d":{},"e":[]},"f":18446744073709551615,"g":-9223372036854775808,"h":1e300}"#,
            r#"[{"k":"v"},[[]],"",0]"#,
            r#""just a string""#,
            "  42  ",
            "null",
        ] {
            let expected: Value = serde_json::from_str(text).map_err(|_| Refused::Syntax)?;
            assert_eq!(roundtrip(text), Ok(expected), "{text}");
        }
        Ok(())
    }

    #[test]
    fn what_serde_json_refuses_the_tape_refuses() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for bad in ["", "{", "{\"a\":1}x", "NaN", "1e400", "{\"a\" 1}", "\"\\x\"", &deep] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            assert_eq!(roundtrip(bad), Err(Refused::Syntax), "{bad}");
        }
        let mut tape = Tape::new();
        assert_eq!(tape.parse(b"\"\xff\""), Err(Refused::Syntax));
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_and_size() {
        assert_eq!(roundtrip(r#"{"a":1,"b":2,"a":3}"#), Err(Refused::DuplicateKey));
        assert_eq!(roundtrip(r#"{"x":{"a":1,"a":1}}"#), Err(Refused::DuplicateKey));
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(roundtrip(&format!("{{{}}}", many.join(","))).is_ok());
        assert_eq!(roundtrip(&format!("{{{},\"k7\":0}}", many.join(","))), Err(Refused::DuplicateKey));
        // The same name in sibling objects is fine.
        assert!(roundtrip(r#"{"x":{"a":1},"y":{"a":1},"a":{"a":{"a":2}}}"#).is_ok());
    }

    #[test]
    fn lookups_follow_the_document() -> Result<(), Refused> {
        let mut tape = Tape::new();
        assert_eq!(tape.parse(br#"{"id":"p-1","n":{"deep":[1,{"z":null}]},"amount":12.5}"#), Ok(()));
        let root = tape.root().ok_or(Refused::Syntax)?;
        assert_eq!(root.get("id").and_then(|v| v.as_str()), Some("p-1"));
        assert_eq!(root.get("amount").and_then(|v| v.as_number()).map(ToString::to_string), Some("12.5".into()));
        assert!(root.get("n").is_some_and(|n| n.is_object()));
        assert!(root.get("missing").is_none());
        assert!(root.get("id").and_then(|v| v.get("x")).is_none());
        Ok(())
    }
}
