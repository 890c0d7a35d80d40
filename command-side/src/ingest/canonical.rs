//! The SHA-256 of an inventory document in canonical form (object key order does not matter).
//!
//! Ingest clients re-send the same inventory document many times, serialized by different tools
//! that order object keys differently. The content hash lets the command side recognise a
//! document it has already seen without caring about key order, while any change that means
//! something (a value, an array's order, a type) gives a different hash.
//!
//! The canonical form is written out explicitly here rather than borrowed from however
//! `serde_json` happens to iterate a [`Map`]: the hashes are stored, so the form must not change
//! when a crate feature (such as `preserve_order`) or a dependency does.

use std::io::{self, Write};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The lowercase hex SHA-256 of `document`'s canonical form.
///
/// This is the document's identity for de-duplication: two documents that differ only in the
/// order of keys inside objects (at any depth) hash the same; any other difference changes the
/// hash. The canonical form is streamed into the hasher (no copy of the document is built), so
/// this is cheap enough for documents of several megabytes at thousands per second. Nesting
/// depth costs heap, not stack.
///
/// # Canonical form
///
/// Compact JSON text, UTF-8, with no whitespace anywhere:
///
/// - `null`, `true`, `false` as themselves.
/// - Numbers exactly as `serde_json` prints them (this crate's `serde_json` is built without
///   `arbitrary_precision`): a number that was parsed as an integer and fits in `u64` or `i64`
///   is written in plain decimal (`1`, `-42`, `18446744073709551615`); every other number is an
///   `f64` written as its shortest round-trip representation, which always has a `.` or an
///   exponent (`1.0`, `0.1`, `1e-7`, `1e+20`, `-0.0`). So **`1` and `1.0` are different
///   numbers** and hash differently, and `1e2` is the float `100.0`. This is *not* RFC 8785
///   (JCS) number formatting.
/// - Strings in double quotes, escaped as `serde_json` escapes them: `"` as `\"`, `\` as `\\`,
///   U+0008, U+0009, U+000A, U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`, the other
///   characters below U+0020 as `\u00xx` with lowercase hex digits; every other character
///   (including `/`, U+007F and all non-ASCII) as its raw UTF-8 bytes.
/// - Arrays as `[`, the elements in their original order separated by `,`, then `]`.
/// - Objects as `{`, the members `"key":value` separated by `,` with keys sorted by their UTF-8
///   bytes (which is Unicode code point order), then `}`.
///
/// For documents without floats this is the same text as Python's
/// `json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
#[must_use]
pub fn content_hash(document: &Value) -> String {
    let mut writer = HashWriter::new();
    // `HashWriter` never returns an error, and errors only ever come from the writer.
    write_canonical(document, &mut writer).expect("writing into a hasher cannot fail");
    writer.finish()
}

/// Writes `document`'s canonical form (see [`content_hash`]) to `writer`.
///
/// It exists so that the exact bytes behind a content hash can be inspected, stored or
/// compared with another implementation. It walks the document with an explicit stack, so
/// deeply nested documents do not overflow the thread's stack.
///
/// # Errors
///
/// Only the errors `writer` returns.
pub fn write_canonical<W: Write>(document: &Value, mut writer: W) -> io::Result<()> {
    let w = &mut writer;
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pending = Some(document);
    loop {
        if let Some(value) = pending.take() {
            match value {
                Value::Null => w.write_all(b"null")?,
                Value::Bool(true) => w.write_all(b"true")?,
                Value::Bool(false) => w.write_all(b"false")?,
                // serde_json's own number formatting (itoa / ryu), much faster than `Display`.
                Value::Number(number) => serde_json::to_writer(&mut *w, number)?,
                Value::String(string) => write_string(w, string)?,
                Value::Array(items) => {
                    w.write_all(b"[")?;
                    stack.push(Frame::Array {
                        items: items.iter(),
                        first: true,
                    });
                }
                Value::Object(map) => {
                    w.write_all(b"{")?;
                    stack.push(Frame::Object {
                        members: Members::of(map),
                        first: true,
                    });
                }
            }
        }
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        match frame {
            Frame::Array { items, first } => match items.next() {
                Some(item) => {
                    if !std::mem::replace(first, false) {
                        w.write_all(b",")?;
                    }
                    pending = Some(item);
                }
                None => {
                    w.write_all(b"]")?;
                    stack.pop();
                }
            },
            Frame::Object { members, first } => match members.next() {
                Some((key, value)) => {
                    if !std::mem::replace(first, false) {
                        w.write_all(b",")?;
                    }
                    write_string(w, key)?;
                    w.write_all(b":")?;
                    pending = Some(value);
                }
                None => {
                    w.write_all(b"}")?;
                    stack.pop();
                }
            },
        }
    }
}

/// An array or object whose members are still being written.
enum Frame<'a> {
    Array {
        items: std::slice::Iter<'a, Value>,
        first: bool,
    },
    Object {
        members: Members<'a>,
        first: bool,
    },
}

/// An object's members in canonical (UTF-8 byte) key order.
enum Members<'a> {
    /// The map already iterates in canonical order (always so without `preserve_order`).
    InOrder(serde_json::map::Iter<'a>),
    /// The map's own order was not canonical, so its members were sorted.
    Sorted(std::vec::IntoIter<(&'a String, &'a Value)>),
}

impl<'a> Members<'a> {
    fn of(map: &'a Map<String, Value>) -> Self {
        match resorted(map.iter()) {
            None => Self::InOrder(map.iter()),
            Some(members) => Self::Sorted(members.into_iter()),
        }
    }
}

/// `None` if `members` already come in canonical key order, else the members sorted into it.
fn resorted<'a, I>(members: I) -> Option<Vec<(&'a String, &'a Value)>>
where
    I: Iterator<Item = (&'a String, &'a Value)> + Clone,
{
    let mut keys = members.clone().map(|(key, _)| key.as_bytes());
    let mut previous = keys.next()?;
    for key in keys {
        if previous >= key {
            let mut sorted: Vec<_> = members.collect();
            // Keys in a map are unique, so an unstable sort is deterministic.
            sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            return Some(sorted);
        }
        previous = key;
    }
    None
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a String, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::InOrder(iter) => iter.next(),
            Self::Sorted(iter) => iter.next(),
        }
    }
}

/// Writes `string` quoted and escaped exactly as `serde_json` does.
fn write_string<W: Write>(w: &mut W, string: &str) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = string.as_bytes();
    w.write_all(b"\"")?;
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        w.write_all(&bytes[start..i])?;
        w.write_all(escape)?;
        start = i + 1;
    }
    w.write_all(&bytes[start..])?;
    w.write_all(b"\"")
}

/// How many bytes [`HashWriter`] gathers before handing them to the hasher.
const HASH_BUFFER_LEN: usize = 8 * 1024;

/// An [`io::Write`] that feeds SHA-256 and never fails.
///
/// The canonical writer emits many tiny pieces (`,`, `:`, quotes); gathering them into a
/// fixed buffer before each hasher update keeps per-write overhead low.
struct HashWriter {
    hasher: Sha256,
    buffer: [u8; HASH_BUFFER_LEN],
    len: usize,
}

impl HashWriter {
    fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            buffer: [0; HASH_BUFFER_LEN],
            len: 0,
        }
    }

    fn absorb(&mut self, data: &[u8]) {
        if data.len() <= HASH_BUFFER_LEN - self.len {
            self.buffer[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
            return;
        }
        self.hasher.update(&self.buffer[..self.len]);
        self.len = 0;
        if data.len() >= HASH_BUFFER_LEN {
            self.hasher.update(data);
        } else {
            self.buffer[..data.len()].copy_from_slice(data);
            self.len = data.len();
        }
    }

    fn finish(mut self) -> String {
        self.hasher.update(&self.buffer[..self.len]);
        hex::encode(self.hasher.finalize())
    }
}

impl Write for HashWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.absorb(data);
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.absorb(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canonical(document: &Value) -> String {
        let mut bytes = Vec::new();
        write_canonical(document, &mut bytes).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn key_order_does_not_matter_at_any_depth() {
        let a = parse(r#"{"b": 1, "a": {"y": [ {"q": 1, "p": 2} ], "x": null}, "c": "s"}"#);
        let b = parse(r#"{"c": "s", "a": {"x": null, "y": [{"p": 2, "q": 1}]}, "b": 1}"#);
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(
            canonical(&a),
            r#"{"a":{"x":null,"y":[{"p":2,"q":1}]},"b":1,"c":"s"}"#
        );
    }

    #[test]
    fn array_order_matters() {
        assert_ne!(
            content_hash(&json!({"disks": ["a", "b"]})),
            content_hash(&json!({"disks": ["b", "a"]}))
        );
    }

    #[test]
    fn values_and_types_matter() {
        let base = content_hash(&json!({"n": 1}));
        for other in [
            json!({"n": 1.0}),
            json!({"n": "1"}),
            json!({"n": 2}),
            json!({"n": true}),
            json!({"n": null}),
            json!({"n": [1]}),
            json!({"m": 1}),
            json!([1]),
        ] {
            assert_ne!(base, content_hash(&other), "{other}");
        }
        assert_eq!(
            canonical(&parse("[1, 1.0, 1e2, -0, 1e20]")),
            "[1,1.0,100.0,-0.0,1e+20]"
        );
    }

    #[test]
    fn known_vector() {
        // Expected values computed independently with Python:
        // hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"),
        //                            ensure_ascii=False).encode()).hexdigest()
        let document = parse(
            r#"{"serial": "SN\"1\"\n", "b": [3, 1, 2], "a": {"é": true, "z": null, "A": -7}, "€": "x/y"}"#,
        );
        assert_eq!(
            canonical(&document),
            "{\"a\":{\"A\":-7,\"z\":null,\"é\":true},\"b\":[3,1,2],\"serial\":\"SN\\\"1\\\"\\n\",\"€\":\"x/y\"}"
        );
        assert_eq!(
            content_hash(&document),
            "5f1ee1b5145ff98ffad145c8fd07b345b6d486f0eb4c094b7afb509b3d35231d"
        );
        assert_eq!(
            content_hash(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn members_out_of_order_are_sorted_by_utf8_bytes() {
        let keys = ["b", "é", "a", "Z", "ab", "€"].map(str::to_owned);
        let value = Value::Null;
        let members: Vec<_> = keys.iter().map(|key| (key, &value)).collect();
        let sorted = resorted(members.iter().copied()).expect("out of order");
        let sorted: Vec<&str> = sorted.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(sorted, ["Z", "a", "ab", "b", "é", "€"]);
        let in_order: Vec<_> = [&keys[3], &keys[2], &keys[4]]
            .into_iter()
            .map(|key| (key, &value))
            .collect();
        assert!(resorted(in_order.into_iter()).is_none());
        assert!(resorted(std::iter::empty()).is_none());
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é\u{2028}\u{1f600}");
        let value = Value::String(all);
        assert_eq!(canonical(&value), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn matches_serde_json_output_for_a_sorted_document() {
        let document = parse(
            r#"{"a": [1, -2, 3.5, "x\ty", {"k": false}], "b": {"c": {}, "d": []}, "e": 18446744073709551615}"#,
        );
        assert_eq!(
            canonical(&document),
            serde_json::to_string(&document).unwrap()
        );
    }

    #[test]
    fn large_strings_hash_like_their_bytes() {
        let long = "x".repeat(3 * HASH_BUFFER_LEN + 17);
        let document = json!([long, "tail"]);
        let expected = hex::encode(Sha256::digest(canonical(&document).as_bytes()));
        assert_eq!(content_hash(&document), expected);
    }

    #[test]
    fn maximum_parse_depth_is_fine() {
        // serde_json refuses to parse deeper than 128 levels.
        let depth = 127;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let document = parse(&text);
        let expected = hex::encode(Sha256::digest(text.as_bytes()));
        assert_eq!(content_hash(&document), expected);
    }

    #[test]
    fn deep_nesting_built_in_code_does_not_overflow_the_stack() {
        let depth = 100_000;
        let mut document = Value::Null;
        for _ in 0..depth {
            let mut map = Map::new();
            map.insert("k".to_owned(), Value::Array(vec![document]));
            document = Value::Object(map);
        }
        let text = format!("{}null{}", r#"{"k":["#.repeat(depth), "]}".repeat(depth));
        assert_eq!(
            content_hash(&document),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
        // `Value`'s own `Drop` is recursive; take the tree apart by hand.
        while let Value::Object(mut map) = document {
            document = match map.remove("k") {
                Some(Value::Array(mut items)) => items.pop().unwrap_or(Value::Null),
                _ => Value::Null,
            };
        }
    }
}
