//! The differ: what changed between two full inventory documents of one machine, as a list of
//! self-contained [`InventoryChange`]s, and [`apply`], which replays such a list onto the older
//! document (as-of queries: nearest snapshot + the diffs after it).
//!
//! # Paths
//!
//! A path is a sequence of segments, written one after another with nothing between them:
//!
//! - `/key`: a member of an object;
//! - `[3]`: an array element by position (arrays without an identity key);
//! - `[name=eth1]`: the element of an array of objects whose identity key `name` is `eth1`.
//!
//! The empty path names the whole document. In keys, identity key names and identity values,
//! five characters are escaped, in the spirit of JSON Pointer: `~` as `~0`, `/` as `~1`,
//! `[` as `~2`, `]` as `~3`, `=` as `~4`. Nothing else is escaped, so a path reads as the
//! document does: `/network/interfaces[name=eth1]/addresses[0]/address`. Identity values are
//! strings (written as they are, escaped) or integers (written as JSON writes them).
//!
//! # Identity matching
//!
//! An array whose elements are all scalars is a multiset: a reorder is no change; any other
//! difference is one `changed` at the array's path carrying both whole arrays (scalar arrays
//! are small: DNS servers, CPU flags). An array of objects is matched by the first identity key
//! of [`DiffRules::identity_keys`] that every element of *both* versions has, with a string
//! value in all of them or an integer value in all of them, distinct within each version.
//! Anything else is compared by position: common positions recursively, then trailing
//! elements added or removed.
//!
//! # Order
//!
//! Changes come in document order: object members by key (serde_json's map is sorted), array
//! elements by position in the new document, then removed identity elements by their position
//! in the old one. The order is a function of the two documents alone.

use std::cmp::Ordering;
use std::fmt::Write as _;

use events_schema::{ChangeOp, InventoryChange};
use serde_json::{Map, Number, Value};

use super::rules::DiffRules;

/// One segment of a parsed path: what [`parse_path`] gives and [`format_path`] takes, so
/// readers of the diff timeline can walk a path without parsing strings themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `/key`: a member of an object.
    Key(String),
    /// `[n]`: an array element by position.
    Index(usize),
    /// `[key=value]`: the array element whose identity `key` has the (rendered) `value`.
    Id {
        /// Name of the identity key, e.g. `name`.
        key: String,
        /// The identity value as written in the path (an integer is written as JSON does).
        value: String,
    },
}

/// A path that does not follow the syntax of the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {path:?} at byte {at}: {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// Why a list of changes could not be applied to a document: it was not the document the
/// changes were computed from (or an ancestor of it modulo ignored paths).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A change carries a path that does not parse.
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    /// The path (or one of its ancestors) is not in the document.
    #[error("{path}: not in the document")]
    Missing {
        /// The change's path.
        path: String,
    },
    /// An `added` change names something that is already there.
    #[error("{path}: already in the document")]
    AlreadyPresent {
        /// The change's path.
        path: String,
    },
    /// A segment does not fit the value it steps into (a key into an array, ...).
    #[error("{path}: the document has another type there")]
    WrongType {
        /// The change's path.
        path: String,
    },
    /// A change removes the whole document.
    #[error("the whole document cannot be removed")]
    RootRemoved,
}

// ---------------------------------------------------------------------------------------------
// Borrowed segments, used while walking (no strings are built until a change is emitted).

/// The value of an identity key: a string or an integer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdRef<'a> {
    Str(&'a str),
    Num(&'a Number),
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum IdOrd<'a> {
    Str(&'a str),
    Neg(i64),
    Pos(u64),
}

impl<'a> IdRef<'a> {
    /// The identity value of `value`, if it can be one (a string or an integer).
    fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::Str(s)),
            Value::Number(n) if n.is_u64() || n.is_i64() => Some(Self::Num(n)),
            _ => None,
        }
    }

    fn ord_key(self) -> IdOrd<'a> {
        match self {
            Self::Str(s) => IdOrd::Str(s),
            Self::Num(n) => match n.as_u64() {
                Some(u) => IdOrd::Pos(u),
                None => IdOrd::Neg(n.as_i64().unwrap_or(i64::MIN)),
            },
        }
    }

    fn is_str(self) -> bool {
        matches!(self, Self::Str(_))
    }

    /// Whether this value is written as `text` in a path.
    pub(crate) fn renders_as(self, text: &str) -> bool {
        match self {
            Self::Str(s) => s == text,
            Self::Num(n) => n.to_string() == text,
        }
    }
}

impl PartialEq for IdRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.ord_key() == other.ord_key()
    }
}
impl Eq for IdRef<'_> {}
impl PartialOrd for IdRef<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IdRef<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ord_key().cmp(&other.ord_key())
    }
}

/// A path segment borrowed from the documents and the rules.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SegmentRef<'a> {
    Key(&'a str),
    Index(usize),
    Id { key: &'a str, value: IdRef<'a> },
}

impl Segment {
    /// The borrowed form, for pattern matching.
    pub(crate) fn as_ref(&self) -> SegmentRef<'_> {
        match self {
            Segment::Key(k) => SegmentRef::Key(k),
            Segment::Index(i) => SegmentRef::Index(*i),
            Segment::Id { key, value } => SegmentRef::Id {
                key,
                value: IdRef::Str(value),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Path syntax.

fn escape_into(text: &str, out: &mut String) {
    if !text.contains(['~', '/', '[', ']', '=']) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            '[' => out.push_str("~2"),
            ']' => out.push_str("~3"),
            '=' => out.push_str("~4"),
            c => out.push(c),
        }
    }
}

pub(crate) fn write_segments(segments: &[SegmentRef<'_>], out: &mut String) {
    for segment in segments {
        match *segment {
            SegmentRef::Key(k) => {
                out.push('/');
                escape_into(k, out);
            }
            SegmentRef::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            SegmentRef::Id { key, value } => {
                out.push('[');
                escape_into(key, out);
                out.push('=');
                match value {
                    IdRef::Str(s) => escape_into(s, out),
                    IdRef::Num(n) => {
                        let _ = write!(out, "{n}");
                    }
                }
                out.push(']');
            }
        }
    }
}

/// Writes segments in the path syntax; the inverse of [`parse_path`].
pub fn format_path(segments: &[Segment]) -> String {
    let borrowed: Vec<SegmentRef<'_>> = segments.iter().map(Segment::as_ref).collect();
    let mut out = String::new();
    write_segments(&borrowed, &mut out);
    out
}

/// A token of the path or pattern syntax: patterns add `[*]`, `/*` and `/**` on top of paths.
pub(crate) enum Token {
    Key(String),
    Index(usize),
    Id(String, String),
    AnyElement,
}

fn unescape(path: &str, start: usize, raw: &str) -> Result<String, PathError> {
    let error = |at: usize, reason| PathError {
        path: path.to_owned(),
        at: start + at,
        reason,
    };
    if !raw.contains(['~', ']', '=']) {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some((_, '0')) => out.push('~'),
                Some((_, '1')) => out.push('/'),
                Some((_, '2')) => out.push('['),
                Some((_, '3')) => out.push(']'),
                Some((_, '4')) => out.push('='),
                _ => return Err(error(at, "`~` must be followed by 0, 1, 2, 3 or 4")),
            },
            ']' | '=' => return Err(error(at, "`]` and `=` must be escaped as ~3 and ~4")),
            c => out.push(c),
        }
    }
    Ok(out)
}

pub(crate) fn tokenize(path: &str) -> Result<Vec<Token>, PathError> {
    let bytes = path.as_bytes();
    let error = |at: usize, reason| PathError {
        path: path.to_owned(),
        at,
        reason,
    };
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'/' => {
                let start = at + 1;
                let end = path[start..]
                    .find(['/', '['])
                    .map_or(path.len(), |i| start + i);
                tokens.push(Token::Key(unescape(path, start, &path[start..end])?));
                at = end;
            }
            b'[' => {
                let start = at + 1;
                let end = path[start..]
                    .find(']')
                    .map(|i| start + i)
                    .ok_or_else(|| error(at, "`[` without `]`"))?;
                let inner = &path[start..end];
                if inner == "*" {
                    tokens.push(Token::AnyElement);
                } else if let Some(eq) = inner.find('=') {
                    let key = unescape(path, start, &inner[..eq])?;
                    let value = unescape(path, start + eq + 1, &inner[eq + 1..])?;
                    tokens.push(Token::Id(key, value));
                } else if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                    let index = inner
                        .parse()
                        .map_err(|_| error(start, "index out of range"))?;
                    tokens.push(Token::Index(index));
                } else {
                    return Err(error(start, "expected `[n]` or `[key=value]`"));
                }
                at = end + 1;
            }
            _ => return Err(error(at, "a segment starts with `/` or `[`")),
        }
    }
    Ok(tokens)
}

/// Parses a path of the syntax in the module documentation.
pub fn parse_path(path: &str) -> Result<Vec<Segment>, PathError> {
    tokenize(path)?
        .into_iter()
        .map(|token| match token {
            Token::Key(k) => Ok(Segment::Key(k)),
            Token::Index(i) => Ok(Segment::Index(i)),
            Token::Id(key, value) => Ok(Segment::Id { key, value }),
            Token::AnyElement => Err(PathError {
                path: path.to_owned(),
                at: 0,
                reason: "`[*]` is a pattern, not a path",
            }),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Diff.

/// The changes that turn `old` into `new`, in document order, classified by `rules`, with
/// ignored paths left out. Nothing is cloned or formatted except for what is emitted.
pub fn diff(old: &Value, new: &Value, rules: &DiffRules) -> Vec<InventoryChange> {
    let mut differ = Differ {
        rules,
        path: Vec::with_capacity(16),
        out: Vec::new(),
    };
    differ.values(old, new);
    differ.out
}

struct Differ<'a> {
    rules: &'a DiffRules,
    path: Vec<SegmentRef<'a>>,
    out: Vec<InventoryChange>,
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// The identity values of `array` under `key`, in array order, if every element has one of
/// the same kind as `kind` (strings or integers; `kind` is set by the first element seen).
fn identities<'a>(
    array: &'a [Value],
    key: &str,
    kind: &mut Option<bool>,
    out: &mut Vec<IdRef<'a>>,
) -> bool {
    out.clear();
    out.reserve(array.len());
    for element in array {
        let Some(id) = element
            .as_object()
            .and_then(|o| o.get(key))
            .and_then(IdRef::of)
        else {
            return false;
        };
        match kind {
            Some(is_str) if *is_str != id.is_str() => return false,
            Some(_) => {}
            None => *kind = Some(id.is_str()),
        }
        out.push(id);
    }
    true
}

/// Whether the values are pairwise distinct; `sorted` is scratch space.
fn distinct<'a>(ids: &[IdRef<'a>], sorted: &mut Vec<IdRef<'a>>) -> bool {
    if ids.windows(2).all(|w| w[0] < w[1]) {
        return true;
    }
    sorted.clear();
    sorted.extend_from_slice(ids);
    sorted.sort_unstable();
    sorted.windows(2).all(|w| w[0] != w[1])
}

/// Orders scalars so that equal values are adjacent (for multiset comparison).
fn scalar_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => match (x.as_u64(), y.as_u64()) {
            (Some(u), Some(v)) => u.cmp(&v),
            _ => match (x.as_i64(), y.as_i64()) {
                (Some(u), Some(v)) => u.cmp(&v),
                _ => {
                    let (fx, fy) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                    fx.total_cmp(&fy)
                        .then_with(|| x.is_f64().cmp(&y.is_f64()))
                        .then_with(|| x.to_string().cmp(&y.to_string()))
                }
            },
        },
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Whether two arrays of scalars hold the same values, ignoring order.
fn same_multiset(a: &[Value], b: &[Value]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a: Vec<&Value> = a.iter().collect();
    let mut b: Vec<&Value> = b.iter().collect();
    a.sort_unstable_by(|x, y| scalar_order(x, y));
    b.sort_unstable_by(|x, y| scalar_order(x, y));
    a == b
}

impl<'a> Differ<'a> {
    fn emit(&mut self, op: ChangeOp, previous: Option<&Value>, current: Option<&Value>) {
        if !self.rules.ignores(&self.path) {
            self.push_change(op, previous.cloned(), current.cloned());
        }
    }

    fn emit_owned(&mut self, op: ChangeOp, previous: Option<Value>, current: Option<Value>) {
        if !self.rules.ignores(&self.path) {
            self.push_change(op, previous, current);
        }
    }

    fn push_change(&mut self, op: ChangeOp, previous: Option<Value>, current: Option<Value>) {
        let (category, severity) = self.rules.classify_segments(&self.path, op);
        let mut path = String::with_capacity(64);
        write_segments(&self.path, &mut path);
        self.out.push(InventoryChange {
            path,
            op,
            previous,
            current,
            category,
            severity,
        });
    }

    fn values(&mut self, old: &'a Value, new: &'a Value) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => self.objects(a, b),
            (Value::Array(a), Value::Array(b)) => self.arrays(a, b),
            _ if old == new => {}
            _ => self.emit(ChangeOp::Changed, Some(old), Some(new)),
        }
    }

    fn child(&mut self, segment: SegmentRef<'a>, old: &'a Value, new: &'a Value) {
        self.path.push(segment);
        self.values(old, new);
        self.path.pop();
    }

    fn single(&mut self, segment: SegmentRef<'a>, op: ChangeOp, value: &'a Value) {
        self.path.push(segment);
        match op {
            ChangeOp::Removed => self.emit(op, Some(value), None),
            _ => self.emit(op, None, Some(value)),
        }
        self.path.pop();
    }

    /// Both maps iterate in key order (serde_json without `preserve_order`), so one merge
    /// walk finds common, added and removed members without a lookup.
    fn objects(&mut self, old: &'a Map<String, Value>, new: &'a Map<String, Value>) {
        let mut olds = old.iter().peekable();
        let mut news = new.iter().peekable();
        loop {
            match (olds.peek(), news.peek()) {
                (Some(&(ok, ov)), Some(&(nk, nv))) => match ok.cmp(nk) {
                    Ordering::Equal => {
                        olds.next();
                        news.next();
                        self.child(SegmentRef::Key(ok), ov, nv);
                    }
                    Ordering::Less => {
                        olds.next();
                        self.single(SegmentRef::Key(ok), ChangeOp::Removed, ov);
                    }
                    Ordering::Greater => {
                        news.next();
                        self.single(SegmentRef::Key(nk), ChangeOp::Added, nv);
                    }
                },
                (Some(&(ok, ov)), None) => {
                    olds.next();
                    self.single(SegmentRef::Key(ok), ChangeOp::Removed, ov);
                }
                (None, Some(&(nk, nv))) => {
                    news.next();
                    self.single(SegmentRef::Key(nk), ChangeOp::Added, nv);
                }
                (None, None) => break,
            }
        }
    }

    fn arrays(&mut self, old: &'a [Value], new: &'a [Value]) {
        if old == new {
            return;
        }
        if old.iter().all(is_scalar) && new.iter().all(is_scalar) {
            if !same_multiset(old, new) {
                // Scalar arrays are replaced whole: their elements have no name of their own.
                let (old, new) = (Value::Array(old.to_vec()), Value::Array(new.to_vec()));
                self.emit_owned(ChangeOp::Changed, Some(old), Some(new));
            }
            return;
        }
        if let Some((key, old_ids, new_ids)) = self.identity_key(old, new) {
            self.by_identity(key, old, new, &old_ids, &new_ids);
        } else {
            self.by_index(old, new);
        }
    }

    /// The first identity key that both versions of the array satisfy, with their identities.
    #[allow(clippy::type_complexity)]
    fn identity_key(
        &self,
        old: &'a [Value],
        new: &'a [Value],
    ) -> Option<(&'a str, Vec<IdRef<'a>>, Vec<IdRef<'a>>)> {
        let first = old.first().or(new.first())?.as_object()?;
        let (mut old_ids, mut new_ids, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        for key in self.rules.identity_keys() {
            if !first.contains_key(key.as_str()) {
                continue;
            }
            let mut kind = None;
            if identities(old, key, &mut kind, &mut old_ids)
                && identities(new, key, &mut kind, &mut new_ids)
                && distinct(&new_ids, &mut scratch)
                && (old_ids == new_ids || distinct(&old_ids, &mut scratch))
            {
                return Some((key.as_str(), old_ids, new_ids));
            }
        }
        None
    }

    fn by_identity(
        &mut self,
        key: &'a str,
        old: &'a [Value],
        new: &'a [Value],
        old_ids: &[IdRef<'a>],
        new_ids: &[IdRef<'a>],
    ) {
        if old_ids == new_ids {
            for ((o, n), &id) in old.iter().zip(new).zip(new_ids) {
                self.child(SegmentRef::Id { key, value: id }, o, n);
            }
            return;
        }
        let mut sorted: Vec<(IdRef<'a>, usize)> =
            old_ids.iter().copied().zip(0..old_ids.len()).collect();
        sorted.sort_unstable();
        let mut matched = vec![false; old.len()];
        for (n, &id) in new.iter().zip(new_ids) {
            let segment = SegmentRef::Id { key, value: id };
            match sorted.binary_search_by(|(probe, _)| probe.cmp(&id)) {
                Ok(found) => {
                    let index = sorted[found].1;
                    matched[index] = true;
                    self.child(segment, &old[index], n);
                }
                Err(_) => self.single(segment, ChangeOp::Added, n),
            }
        }
        for ((o, &id), _) in old
            .iter()
            .zip(old_ids)
            .zip(&matched)
            .filter(|(_, matched)| !**matched)
        {
            self.single(SegmentRef::Id { key, value: id }, ChangeOp::Removed, o);
        }
    }

    fn by_index(&mut self, old: &'a [Value], new: &'a [Value]) {
        let common = old.len().min(new.len());
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            self.child(SegmentRef::Index(i), o, n);
        }
        for (i, n) in new.iter().enumerate().skip(common) {
            self.single(SegmentRef::Index(i), ChangeOp::Added, n);
        }
        for (i, o) in old.iter().enumerate().skip(common) {
            self.single(SegmentRef::Index(i), ChangeOp::Removed, o);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apply.

/// Applies the changes of one [`diff`] to the document it was computed from.
///
/// `apply(old, &diff(old, new, rules))` equals `new` up to [`canonical`] form: ignored paths
/// keep their old values, and identity-matched elements keep their old positions (new ones are
/// appended). Removals are applied last, in reverse order, so trailing positional removals
/// (`[4]`, then `[3]`) do not shift each other. `previous` values are not checked: they are
/// for readers of the timeline. A change missing `current` (an added or changed `null`, which
/// JSON cannot tell from an absent field) sets `null`.
pub fn apply(doc: &Value, changes: &[InventoryChange]) -> Result<Value, ApplyError> {
    let mut out = doc.clone();
    for change in changes.iter().filter(|c| c.op != ChangeOp::Removed) {
        apply_one(&mut out, change)?;
    }
    for change in changes.iter().rev().filter(|c| c.op == ChangeOp::Removed) {
        apply_one(&mut out, change)?;
    }
    Ok(out)
}

fn find_by_id(array: &[Value], key: &str, value: &str) -> Option<usize> {
    array.iter().position(|element| {
        element
            .as_object()
            .and_then(|o| o.get(key))
            .and_then(IdRef::of)
            .is_some_and(|id| id.renders_as(value))
    })
}

fn apply_one(doc: &mut Value, change: &InventoryChange) -> Result<(), ApplyError> {
    let path = &change.path;
    let missing = || ApplyError::Missing { path: path.clone() };
    let wrong = || ApplyError::WrongType { path: path.clone() };
    let segments = parse_path(path)?;
    let value = || change.current.clone().unwrap_or(Value::Null);
    let Some((last, parents)) = segments.split_last() else {
        return match change.op {
            ChangeOp::Removed => Err(ApplyError::RootRemoved),
            _ => {
                *doc = value();
                Ok(())
            }
        };
    };
    let mut target = doc;
    for segment in parents {
        target = match (segment, target) {
            (Segment::Key(k), Value::Object(o)) => o.get_mut(k).ok_or_else(missing)?,
            (Segment::Index(i), Value::Array(a)) => a.get_mut(*i).ok_or_else(missing)?,
            (Segment::Id { key, value }, Value::Array(a)) => {
                let i = find_by_id(a, key, value).ok_or_else(missing)?;
                &mut a[i]
            }
            _ => return Err(wrong()),
        };
    }
    match (last, target) {
        (Segment::Key(k), Value::Object(o)) => match change.op {
            ChangeOp::Added if o.contains_key(k) => {
                Err(ApplyError::AlreadyPresent { path: path.clone() })
            }
            ChangeOp::Added => {
                o.insert(k.clone(), value());
                Ok(())
            }
            ChangeOp::Changed => {
                *o.get_mut(k).ok_or_else(missing)? = value();
                Ok(())
            }
            ChangeOp::Removed => o.remove(k).map(drop).ok_or_else(missing),
        },
        (Segment::Index(i), Value::Array(a)) => match change.op {
            ChangeOp::Added if *i == a.len() => {
                a.push(value());
                Ok(())
            }
            ChangeOp::Added if *i < a.len() => {
                Err(ApplyError::AlreadyPresent { path: path.clone() })
            }
            ChangeOp::Added => Err(missing()),
            ChangeOp::Changed => {
                *a.get_mut(*i).ok_or_else(missing)? = value();
                Ok(())
            }
            ChangeOp::Removed if *i < a.len() => {
                a.remove(*i);
                Ok(())
            }
            ChangeOp::Removed => Err(missing()),
        },
        (Segment::Id { key, value: id }, Value::Array(a)) => {
            let found = find_by_id(a, key, id);
            match (change.op, found) {
                (ChangeOp::Added, Some(_)) => {
                    Err(ApplyError::AlreadyPresent { path: path.clone() })
                }
                (ChangeOp::Added, None) => {
                    a.push(value());
                    Ok(())
                }
                (ChangeOp::Changed, Some(i)) => {
                    a[i] = value();
                    Ok(())
                }
                (ChangeOp::Removed, Some(i)) => {
                    a.remove(i);
                    Ok(())
                }
                (_, None) => Err(missing()),
            }
        }
        _ => Err(wrong()),
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical form.

/// The form in which two documents are compared "modulo ignored paths and identity order":
/// ignored members removed, scalar arrays sorted, arrays of objects with an identity key
/// (chosen per array, as the differ would for an array compared with itself) sorted by it.
///
/// It states the contract of [`apply`]: `canonical(apply(old, diff(old, new)))
/// == canonical(new)`. Tests, the fuzz target and as-of checks use it.
pub fn canonical(doc: &Value, rules: &DiffRules) -> Value {
    let mut path = Vec::new();
    canonical_at(doc, rules, &mut path)
}

fn canonical_at<'a>(doc: &'a Value, rules: &'a DiffRules, path: &mut Vec<SegmentRef<'a>>) -> Value {
    match doc {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                path.push(SegmentRef::Key(k));
                if !rules.ignores(path) {
                    out.insert(k.clone(), canonical_at(v, rules, path));
                }
                path.pop();
            }
            Value::Object(out)
        }
        Value::Array(array) if array.iter().all(is_scalar) => {
            let mut sorted = array.clone();
            sorted.sort_by(scalar_order);
            Value::Array(sorted)
        }
        Value::Array(array) => {
            let differ = Differ {
                rules,
                path: Vec::new(),
                out: Vec::new(),
            };
            let mut elements: Vec<(Option<IdRef<'a>>, Value)> =
                match differ.identity_key(array, array) {
                    Some((key, ids, _)) => array
                        .iter()
                        .zip(ids)
                        .map(|(element, id)| {
                            path.push(SegmentRef::Id { key, value: id });
                            let element = canonical_at(element, rules, path);
                            path.pop();
                            (Some(id), element)
                        })
                        .collect(),
                    None => array
                        .iter()
                        .enumerate()
                        .map(|(i, element)| {
                            path.push(SegmentRef::Index(i));
                            let element = canonical_at(element, rules, path);
                            path.pop();
                            (None, element)
                        })
                        .collect(),
                };
            elements.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Array(elements.into_iter().map(|(_, v)| v).collect())
        }
        scalar => scalar.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::{ChangeCategory, ChangeSeverity};
    use serde_json::json;

    fn rules() -> DiffRules {
        DiffRules::default()
    }

    fn paths(changes: &[InventoryChange]) -> Vec<(&str, ChangeOp)> {
        changes.iter().map(|c| (c.path.as_str(), c.op)).collect()
    }

    fn round_trip(old: &Value, new: &Value) -> Vec<InventoryChange> {
        let rules = rules();
        let changes = diff(old, new, &rules);
        let applied = apply(old, &changes).unwrap();
        assert_eq!(canonical(&applied, &rules), canonical(new, &rules));
        changes
    }

    fn nics() -> Value {
        json!({"network": {"interfaces": [
            {"name": "eth0", "mac": "aa", "ipv4": "10.0.0.1", "counters": {"rx_bytes": 1}},
            {"name": "eth1", "mac": "bb", "ipv4": "10.0.1.1", "counters": {"rx_bytes": 2}},
            {"name": "eth2", "mac": "cc", "ipv4": "10.0.2.1", "counters": {"rx_bytes": 3}},
        ]}})
    }

    #[test]
    fn paths_escape_the_five_special_characters_and_parse_back() {
        let segments = vec![
            Segment::Key("a/b[c]=d~e".into()),
            Segment::Index(3),
            Segment::Id {
                key: "na=me".into(),
                value: "eth/0[x]".into(),
            },
            Segment::Key(String::new()),
        ];
        let text = format_path(&segments);
        assert_eq!(text, "/a~1b~2c~3~4d~0e[3][na~4me=eth~10~2x~3]/");
        assert_eq!(parse_path(&text).unwrap(), segments);
        assert_eq!(parse_path("").unwrap(), vec![]);
    }

    #[test]
    fn malformed_paths_are_rejected() {
        for bad in [
            "os", "/a[", "/a[x]", "/a~9", "/a]b", "/a=b", "/a[*]", "/a[]",
        ] {
            assert!(parse_path(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_changed_ip_on_eth1_is_one_change_that_names_eth1() {
        let old = nics();
        let mut new = nics();
        new["network"]["interfaces"][1]["ipv4"] = json!("10.0.1.99");
        let changes = round_trip(&old, &new);
        assert_eq!(changes.len(), 1);
        let change = &changes[0];
        assert_eq!(change.path, "/network/interfaces[name=eth1]/ipv4");
        assert_eq!(change.op, ChangeOp::Changed);
        assert_eq!(change.previous, Some(json!("10.0.1.1")));
        assert_eq!(change.current, Some(json!("10.0.1.99")));
        assert_eq!(change.category, ChangeCategory::Network);
        assert_eq!(change.severity, ChangeSeverity::Medium);
    }

    #[test]
    fn reordering_an_identity_array_or_a_scalar_array_is_no_change() {
        let old =
            json!({"nics": [{"name": "a", "x": 1}, {"name": "b", "x": 2}], "dns": ["x", "y", "x"]});
        let new =
            json!({"nics": [{"name": "b", "x": 2}, {"name": "a", "x": 1}], "dns": ["x", "x", "y"]});
        assert!(diff(&old, &new, &rules()).is_empty());
        assert!(!diff(&old, &json!({"nics": [], "dns": ["x", "y"]}), &rules()).is_empty());
    }

    #[test]
    fn counters_and_uptime_are_ignored_by_default() {
        let old = json!({"os": {"uptime_seconds": 1, "name": "Debian"}, "nics": [{"name": "eth0", "counters": {"rx_bytes": 1}}]});
        let new = json!({"os": {"uptime_seconds": 2, "name": "Debian"}, "nics": [{"name": "eth0", "counters": {"rx_bytes": 9}}]});
        assert!(diff(&old, &new, &rules()).is_empty());
        let applied = apply(&old, &diff(&old, &new, &rules())).unwrap();
        assert_eq!(
            applied["os"]["uptime_seconds"],
            json!(1),
            "ignored paths keep their old value"
        );
    }

    #[test]
    fn added_and_removed_identity_elements_name_themselves() {
        let old = json!({"hardware": {"memory": [{"serial": "S1", "size": 8}, {"serial": "S2", "size": 8}]}});
        let new = json!({"hardware": {"memory": [{"serial": "S3", "size": 16}, {"serial": "S1", "size": 8}]}});
        let changes = round_trip(&old, &new);
        assert_eq!(
            paths(&changes),
            vec![
                ("/hardware/memory[serial=S3]", ChangeOp::Added),
                ("/hardware/memory[serial=S2]", ChangeOp::Removed),
            ]
        );
        assert_eq!(changes[1].severity, ChangeSeverity::Critical);
        assert_eq!(
            changes[1].previous,
            Some(json!({"serial": "S2", "size": 8}))
        );
    }

    #[test]
    fn arrays_without_a_distinct_identity_fall_back_to_positions() {
        let old = json!({"a": [{"name": "x", "v": 1}, {"name": "x", "v": 2}, {"v": 3}], "b": [{"v": 1}, {"v": 2}, {"v": 3}]});
        let new = json!({"a": [{"name": "x", "v": 1}, {"name": "x", "v": 5}], "b": [{"v": 1}]});
        let changes = round_trip(&old, &new);
        assert_eq!(
            paths(&changes),
            vec![
                ("/a[1]/v", ChangeOp::Changed),
                ("/a[2]", ChangeOp::Removed),
                ("/b[1]", ChangeOp::Removed),
                ("/b[2]", ChangeOp::Removed),
            ]
        );
    }

    #[test]
    fn integer_identities_render_as_json_numbers() {
        let old = json!({"cpus": [{"id": 0, "mhz": 1}, {"id": -1, "mhz": 1}]});
        let new = json!({"cpus": [{"id": -1, "mhz": 2}, {"id": 0, "mhz": 1}]});
        let changes = round_trip(&old, &new);
        assert_eq!(
            paths(&changes),
            vec![("/cpus[id=-1]/mhz", ChangeOp::Changed)]
        );
    }

    #[test]
    fn type_changes_and_scalar_arrays_replace_the_whole_value() {
        let old = json!({"a": {"b": 1}, "dns": ["1", "2"], "c": null});
        let new = json!({"a": [1], "dns": ["1", "3"]});
        let changes = round_trip(&old, &new);
        assert_eq!(
            paths(&changes),
            vec![
                ("/a", ChangeOp::Changed),
                ("/c", ChangeOp::Removed),
                ("/dns", ChangeOp::Changed),
            ]
        );
        assert_eq!(changes[2].current, Some(json!(["1", "3"])));
    }

    #[test]
    fn os_changes_are_high_and_the_whole_document_can_change() {
        let changes = round_trip(
            &json!({"os": {"name": "Debian", "version": "11"}}),
            &json!({"os": {"name": "Debian", "version": "12"}}),
        );
        assert_eq!(changes[0].category, ChangeCategory::Os);
        assert_eq!(changes[0].severity, ChangeSeverity::High);
        let changes = round_trip(&json!({"a": 1}), &json!([1, 2]));
        assert_eq!(paths(&changes), vec![("", ChangeOp::Changed)]);
    }

    #[test]
    fn apply_refuses_changes_that_do_not_fit_the_document() {
        let doc = json!({"a": {"b": 1}, "l": [1]});
        let change = |path: &str, op| InventoryChange {
            path: path.into(),
            op,
            previous: None,
            current: Some(json!(2)),
            category: ChangeCategory::Other,
            severity: ChangeSeverity::Info,
        };
        let err = |path, op| apply(&doc, &[change(path, op)]).unwrap_err();
        assert!(matches!(
            err("/x/b", ChangeOp::Changed),
            ApplyError::Missing { .. }
        ));
        assert!(matches!(
            err("/a/b", ChangeOp::Added),
            ApplyError::AlreadyPresent { .. }
        ));
        assert!(matches!(
            err("/a[0]", ChangeOp::Changed),
            ApplyError::WrongType { .. }
        ));
        assert!(matches!(
            err("/l[3]", ChangeOp::Added),
            ApplyError::Missing { .. }
        ));
        assert!(matches!(
            err("", ChangeOp::Removed),
            ApplyError::RootRemoved
        ));
        assert!(matches!(
            err("/a[", ChangeOp::Removed),
            ApplyError::InvalidPath(_)
        ));
        let added_null = InventoryChange {
            current: None,
            ..change("/a/c", ChangeOp::Added)
        };
        assert_eq!(apply(&doc, &[added_null]).unwrap()["a"]["c"], Value::Null);
    }

    #[test]
    fn serde_json_maps_iterate_in_key_order() {
        // The differ's merge walk relies on it; `preserve_order` would break it.
        let map = json!({"b": 1, "a": 2, "c": 3});
        let keys: Vec<&String> = map.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
