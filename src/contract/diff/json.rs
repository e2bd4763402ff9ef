//! JSON Schema (draft-07) comparison: walks both schemas side by side, following local `$ref`s,
//! and classifies every keyword change by whether it narrows or widens the accepted records.
//!
//! Each assertion keyword in JSON Schema is a conjunct, so adding one can only narrow and
//! removing one can only widen; a keyword whose value changed is compared where the order is
//! known (bounds, lengths, `multipleOf`, `required`, `enum`, `type`) and otherwise reported as
//! "cannot prove compatible" (`pattern`, `allOf`, …).

use std::collections::{BTreeSet, HashSet};

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{Change, ChangeKind, Impact, join};

/// Keywords that never change which records are valid.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "definitions",
    "$defs",
    "contentMediaType",
    "contentEncoding",
];

/// Keywords compared one by one below.
const HANDLED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "pattern",
    "format",
    "required",
    "properties",
    "additionalProperties",
    "items",
];

/// Nested schemas deeper than this are not compared (a change there "cannot be proved").
const MAX_DEPTH: usize = 64;

const ALL_TYPES: &[&str] = &["null", "boolean", "object", "array", "number", "string"];

/// Every change from `old` to `new`.
pub(super) fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut w = Walker { old_root: old, new_root: new, out: Vec::new(), refs_seen: HashSet::new() };
    w.node("", old, new, 0);
    w.out
}

struct Walker<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    out: Vec<Change>,
    /// `$ref` pairs already being compared (recursive schemas).
    refs_seen: HashSet<(String, String)>,
}

fn change(path: &str, kind: ChangeKind, impact: Impact, message: String) -> Change {
    Change { path: path.to_owned(), kind, message, impact, provable: true }
}

fn unproven(path: &str, kind: ChangeKind, message: String) -> Change {
    Change { path: path.to_owned(), kind, message, impact: Impact::Both, provable: false }
}

/// A local `$ref` (`#`, `#/definitions/x`) resolved within `root`.
fn resolve<'v>(root: &'v Value, reference: &str) -> Option<&'v Value> {
    let pointer = reference.strip_prefix('#')?;
    let decoded: String = pointer.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect::<Vec<_>>().join("/");
    root.pointer(&decoded)
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 { format!("{}…", &s[..s.char_indices().nth(77).map(|(i, _)| i).unwrap_or(s.len())]) } else { s }
}

/// The type set a schema allows; `None` means any type.
fn types(schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.clone()])),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
        _ => None,
    }
}

fn accepts(set: &Option<BTreeSet<String>>, t: &str) -> bool {
    match set {
        None => true,
        Some(s) => s.contains(t) || (t == "integer" && s.contains("number")),
    }
}

/// Whether some value of a type in `from` is not accepted by `to`.
fn loses(from: &Option<BTreeSet<String>>, to: &Option<BTreeSet<String>>) -> bool {
    match from {
        None => ALL_TYPES.iter().any(|t| !accepts(to, t)),
        Some(s) => s.iter().any(|t| !accepts(to, t)),
    }
}

fn show_types(set: &Option<BTreeSet<String>>) -> String {
    match set {
        None => "any".to_owned(),
        Some(s) if s.len() == 1 => s.iter().next().cloned().unwrap_or_default(),
        Some(s) => format!("[{}]", s.iter().cloned().collect::<Vec<_>>().join(", ")),
    }
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => n.to_string().parse::<Decimal>().ok().or_else(|| n.as_f64().and_then(|f| Decimal::try_from(f).ok())),
        _ => None,
    }
}

/// A numeric bound: value and whether it is exclusive. In draft-07 `exclusiveMinimum` is a
/// number of its own; the effective bound is the tighter of the two keywords.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    value: Decimal,
    exclusive: bool,
}

fn lower_bound(s: &Map<String, Value>) -> Option<Bound> {
    let inc = s.get("minimum").and_then(decimal).map(|value| Bound { value, exclusive: false });
    let exc = s.get("exclusiveMinimum").and_then(decimal).map(|value| Bound { value, exclusive: true });
    match (inc, exc) {
        (Some(a), Some(b)) => Some(if b.value >= a.value { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn upper_bound(s: &Map<String, Value>) -> Option<Bound> {
    let inc = s.get("maximum").and_then(decimal).map(|value| Bound { value, exclusive: false });
    let exc = s.get("exclusiveMaximum").and_then(decimal).map(|value| Bound { value, exclusive: true });
    match (inc, exc) {
        (Some(a), Some(b)) => Some(if b.value <= a.value { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Whether lower bound `a` admits fewer values than `b` (`None` = unbounded).
fn lower_tighter(a: Option<Bound>, b: Option<Bound>) -> bool {
    match (a, b) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => a.value > b.value || (a.value == b.value && a.exclusive && !b.exclusive),
    }
}

fn upper_tighter(a: Option<Bound>, b: Option<Bound>) -> bool {
    match (a, b) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(a), Some(b)) => a.value < b.value || (a.value == b.value && a.exclusive && !b.exclusive),
    }
}

fn show_bound(b: Option<Bound>, lower: bool) -> String {
    match b {
        None => "none".to_owned(),
        Some(b) => format!(
            "{}{}",
            if lower {
                if b.exclusive { ">" } else { ">=" }
            } else if b.exclusive {
                "<"
            } else {
                "<="
            },
            b.value
        ),
    }
}

fn bound_kind(narrows: bool, widens: bool) -> ChangeKind {
    match (narrows, widens) {
        (true, false) => ChangeKind::ConstraintTightened,
        (false, true) => ChangeKind::ConstraintLoosened,
        _ => ChangeKind::ConstraintChanged,
    }
}

/// A schema for a property that `properties` does not name: `additionalProperties`, or `{}`.
fn additional(s: &Map<String, Value>) -> Value {
    s.get("additionalProperties").cloned().unwrap_or(Value::Bool(true))
}

impl Walker<'_> {
    /// The combined impact of comparing `old` with `new` at `path`, without listing the changes.
    fn impact_of(&mut self, path: &str, old: &Value, new: &Value, depth: usize) -> (Impact, bool, Vec<Change>) {
        let saved = std::mem::take(&mut self.out);
        self.node(path, old, new, depth);
        let sub = std::mem::replace(&mut self.out, saved);
        let impact = sub.iter().fold(Impact::None, |acc, c| acc.or(c.impact));
        let provable = sub.iter().all(|c| c.provable);
        (impact, provable, sub)
    }

    fn node(&mut self, path: &str, old: &Value, new: &Value, depth: usize) {
        if old == new {
            return;
        }
        if depth > MAX_DEPTH {
            self.out.push(unproven(path, ChangeKind::KeywordChanged, format!("nested deeper than {MAX_DEPTH} levels: not compared")));
            return;
        }
        let old_ref = old.get("$ref").and_then(Value::as_str);
        let new_ref = new.get("$ref").and_then(Value::as_str);
        if old_ref.is_some() || new_ref.is_some() {
            self.refs(path, old, new, old_ref, new_ref, depth);
            return;
        }
        // Boolean schemas: `true` is `{}`; `false` rejects everything.
        let empty = Map::new();
        let (o, n) = match (old, new) {
            (Value::Bool(false), _) => {
                self.out.push(change(
                    path,
                    ChangeKind::TypeChanged,
                    Impact::Readers,
                    "the schema was `false` (nothing valid) and now admits values".into(),
                ));
                return;
            }
            (_, Value::Bool(false)) => {
                self.out.push(change(
                    path,
                    ChangeKind::TypeChanged,
                    Impact::Writers,
                    "the schema is now `false`: nothing is valid here".into(),
                ));
                return;
            }
            (Value::Object(o), Value::Object(n)) => (o, n),
            (Value::Bool(true), Value::Object(n)) => (&empty, n),
            (Value::Object(o), Value::Bool(true)) => (o, &empty),
            _ => {
                self.out.push(unproven(path, ChangeKind::KeywordChanged, format!("{} → {}: not a schema", compact(old), compact(new))));
                return;
            }
        };
        self.object(path, o, n, depth);
    }

    fn refs(&mut self, path: &str, old: &Value, new: &Value, old_ref: Option<&str>, new_ref: Option<&str>, depth: usize) {
        let old_target = match old_ref {
            Some(r) => resolve(self.old_root, r),
            None => Some(old),
        };
        let new_target = match new_ref {
            Some(r) => resolve(self.new_root, r),
            None => Some(new),
        };
        let key = (old_ref.unwrap_or("(inline)").to_owned(), new_ref.unwrap_or("(inline)").to_owned());
        if old_ref.is_some() && old_ref == new_ref {
            // Same reference: compare what it points to, once per pair (recursive schemas).
            if let (Some(o), Some(n)) = (old_target, new_target)
                && self.refs_seen.insert(key)
            {
                self.node(path, o, n, depth + 1);
            }
            return;
        }
        let what = format!("$ref {} → {}", old_ref.unwrap_or("(inline schema)"), new_ref.unwrap_or("(inline schema)"));
        match (old_target, new_target) {
            (Some(o), Some(n)) => {
                if !self.refs_seen.insert(key) {
                    return;
                }
                let (impact, provable, sub) = self.impact_of(path, o, n, depth + 1);
                if old_ref.is_some() && new_ref.is_some() {
                    let detail = if sub.is_empty() {
                        "the targets accept the same records".to_owned()
                    } else {
                        format!("{} change(s) in the target", sub.len())
                    };
                    self.out.push(Change {
                        path: path.to_owned(),
                        kind: ChangeKind::RefChanged,
                        message: format!("{what}: {detail}"),
                        impact,
                        provable,
                    });
                }
                self.out.extend(sub);
            }
            _ => self.out.push(unproven(
                path,
                ChangeKind::RefChanged,
                format!("{what}: a target is not a local definition, so the change cannot be proved compatible"),
            )),
        }
    }

    fn object(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>, depth: usize) {
        self.types(path, o, n);
        self.enums(path, o, n);
        self.bounds(path, o, n);
        self.lengths(path, o, n);
        self.multiple_of(path, o, n);
        self.pattern_and_format(path, o, n);
        self.required(path, o, n);
        self.properties(path, o, n, depth);
        self.items(path, o, n, depth);
        self.other_keywords(path, o, n);
    }

    fn types(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        let (a, b) = (types(o), types(n));
        if a == b {
            return;
        }
        let narrows = loses(&a, &b);
        let widens = loses(&b, &a);
        let impact = Impact::from_flags(narrows, widens);
        if impact != Impact::None {
            let how = match impact {
                Impact::Writers => "narrowed",
                Impact::Readers => "widened",
                _ => "changed",
            };
            self.out.push(change(path, ChangeKind::TypeChanged, impact, format!("type {how}: {} → {}", show_types(&a), show_types(&b))));
        }
    }

    fn enums(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        let values = |s: &Map<String, Value>| -> Option<Vec<Value>> {
            match (s.get("enum"), s.get("const")) {
                (Some(Value::Array(e)), _) => Some(e.clone()),
                (_, Some(c)) => Some(vec![c.clone()]),
                _ => None,
            }
        };
        match (values(o), values(n)) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                for v in a.iter().filter(|v| !b.contains(v)) {
                    self.out.push(change(
                        path,
                        ChangeKind::EnumValueRemoved,
                        Impact::Writers,
                        format!("enum value {} removed", compact(v)),
                    ));
                }
                for v in b.iter().filter(|v| !a.contains(v)) {
                    self.out.push(change(path, ChangeKind::EnumValueAdded, Impact::Readers, format!("enum value {} added", compact(v))));
                }
            }
            (None, Some(b)) => self.out.push(change(
                path,
                ChangeKind::ConstraintTightened,
                Impact::Writers,
                format!("values restricted to {}", compact(&Value::Array(b))),
            )),
            (Some(a), None) => self.out.push(change(
                path,
                ChangeKind::ConstraintLoosened,
                Impact::Readers,
                format!("no longer restricted to {}", compact(&Value::Array(a))),
            )),
        }
    }

    fn bounds(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        for (lower, a, b) in [(true, lower_bound(o), lower_bound(n)), (false, upper_bound(o), upper_bound(n))] {
            if a == b {
                continue;
            }
            let (narrows, widens) =
                if lower { (lower_tighter(b, a), lower_tighter(a, b)) } else { (upper_tighter(b, a), upper_tighter(a, b)) };
            let name = if lower { "lower bound" } else { "upper bound" };
            let message = format!("{name} {} → {}", show_bound(a, lower), show_bound(b, lower));
            self.out.push(change(path, bound_kind(narrows, widens), Impact::from_flags(narrows, widens), message));
        }
    }

    fn lengths(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        for (kw, lower) in [
            ("minLength", true),
            ("maxLength", false),
            ("minItems", true),
            ("maxItems", false),
            ("minProperties", true),
            ("maxProperties", false),
        ] {
            let a = o.get(kw).and_then(Value::as_u64);
            let b = n.get(kw).and_then(Value::as_u64);
            if a == b {
                continue;
            }
            // A missing minimum is 0; a missing maximum is unbounded.
            let (narrows, widens) = if lower {
                let (a, b) = (a.unwrap_or(0), b.unwrap_or(0));
                (b > a, b < a)
            } else {
                let (a, b) = (a.unwrap_or(u64::MAX), b.unwrap_or(u64::MAX));
                (b < a, b > a)
            };
            let show = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
            self.out.push(change(
                path,
                bound_kind(narrows, widens),
                Impact::from_flags(narrows, widens),
                format!("{kw} {} → {}", show(a), show(b)),
            ));
        }
    }

    fn multiple_of(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        let a = o.get("multipleOf").and_then(decimal);
        let b = n.get("multipleOf").and_then(decimal);
        // Multiples of a all are multiples of b exactly when a is a multiple of b.
        let (narrows, widens) = match (a, b) {
            _ if a == b => return,
            (None, Some(_)) => (true, false),
            (Some(_), None) => (false, true),
            (Some(a), Some(b)) if !a.is_zero() && !b.is_zero() => (!(a % b).is_zero(), !(b % a).is_zero()),
            _ => (true, true),
        };
        let show = |x: Option<Decimal>| x.map(|v| v.normalize().to_string()).unwrap_or_else(|| "none".into());
        self.out.push(change(
            path,
            bound_kind(narrows, widens),
            Impact::from_flags(narrows, widens),
            format!("multipleOf {} → {}", show(a), show(b)),
        ));
    }

    fn pattern_and_format(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        for kw in ["pattern", "format"] {
            match (o.get(kw), n.get(kw)) {
                (a, b) if a == b => {}
                (None, Some(b)) => {
                    self.out.push(change(path, ChangeKind::ConstraintTightened, Impact::Writers, format!("{kw} {} added", compact(b))))
                }
                (Some(a), None) => {
                    self.out.push(change(path, ChangeKind::ConstraintLoosened, Impact::Readers, format!("{kw} {} removed", compact(a))))
                }
                (Some(a), Some(b)) => self.out.push(unproven(
                    path,
                    ChangeKind::ConstraintChanged,
                    format!(
                        "{kw} {} → {}: cannot prove compatible (which values each accepts is not decided statically)",
                        compact(a),
                        compact(b)
                    ),
                )),
                (None, None) => {}
            }
        }
    }

    fn required(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        let names = |s: &Map<String, Value>| -> Vec<String> {
            s.get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let (a, b) = (names(o), names(n));
        for f in b.iter().filter(|f| !a.contains(f)) {
            self.out.push(change(&join(path, f), ChangeKind::MadeRequired, Impact::Writers, format!("{f:?} is now required")));
        }
        for f in a.iter().filter(|f| !b.contains(f)) {
            self.out.push(change(&join(path, f), ChangeKind::MadeOptional, Impact::Readers, format!("{f:?} is no longer required")));
        }
    }

    fn properties(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>, depth: usize) {
        let empty = Map::new();
        let op = o.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let np = n.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let (oa, na) = (additional(o), additional(n));
        for (name, os) in op {
            if let Some(ns) = np.get(name) {
                self.node(&join(path, name), os, ns, depth + 1);
            }
        }
        let mut removed: Vec<&String> = op.keys().filter(|k| !np.contains_key(*k)).collect();
        let mut added: Vec<&String> = np.keys().filter(|k| !op.contains_key(*k)).collect();
        // A removed and an added property with the same schema: a rename.
        let mut renames = Vec::new();
        removed.retain(|r| match added.iter().position(|a| op.get(*r) == np.get(*a)) {
            Some(i) => {
                renames.push((*r, added.remove(i)));
                false
            }
            None => true,
        });
        for name in removed {
            let p = join(path, name);
            let (impact, provable, _) = self.impact_of(&p, &op[name], &na, depth + 1);
            let after = match &na {
                Value::Bool(true) => "any value is now accepted there",
                Value::Bool(false) => "records holding it are now rejected (additionalProperties is false)",
                _ => "it now falls under additionalProperties",
            };
            self.out.push(Change {
                path: p,
                kind: ChangeKind::FieldRemoved,
                message: format!("property {name:?} removed: {after}"),
                impact,
                provable,
            });
        }
        for name in added {
            let p = join(path, name);
            let (impact, provable, _) = self.impact_of(&p, &oa, &np[name], depth + 1);
            let before = match &oa {
                Value::Bool(true) => "OLD accepted any value there (open content), NEW constrains it",
                Value::Bool(false) => "OLD rejected records holding it (additionalProperties was false)",
                _ => "OLD held it to additionalProperties",
            };
            let message =
                if impact == Impact::None { format!("property {name:?} added") } else { format!("property {name:?} added: {before}") };
            self.out.push(Change { path: p, kind: ChangeKind::FieldAdded, message, impact, provable });
        }
        for (from, to) in renames {
            let (i1, p1, _) = self.impact_of(&join(path, from), &op[from], &na, depth + 1);
            let (i2, p2, _) = self.impact_of(&join(path, to), &oa, &np[to], depth + 1);
            self.out.push(Change {
                path: join(path, from),
                kind: ChangeKind::FieldRenamed,
                message: format!(
                    "property {from:?} renamed to {to:?} (same schema): records with {from:?} and records with {to:?} are told apart"
                ),
                impact: i1.or(i2),
                provable: p1 && p2,
            });
        }
        // additionalProperties itself.
        let p = join(path, "*");
        match (&oa, &na) {
            (a, b) if a == b => {}
            (Value::Bool(false), Value::Bool(true)) => self.out.push(change(
                path,
                ChangeKind::AdditionalPropertiesOpened,
                Impact::Readers,
                "additionalProperties false → true: undeclared properties are now accepted".into(),
            )),
            (_, Value::Bool(false)) => self.out.push(change(
                path,
                ChangeKind::AdditionalPropertiesClosed,
                Impact::Writers,
                "additionalProperties closed (false): records with undeclared properties are now rejected".into(),
            )),
            (Value::Bool(false), _) => self.out.push(change(
                path,
                ChangeKind::AdditionalPropertiesOpened,
                Impact::Readers,
                "additionalProperties opened: undeclared properties are now accepted".into(),
            )),
            (a, b) => self.node(&p, a, b, depth + 1),
        }
    }

    fn items(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>, depth: usize) {
        let p = join(path, "[]");
        match (o.get("items"), n.get("items")) {
            (a, b) if a == b => {}
            (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    self.node(&join(path, &i.to_string()), x, y, depth + 1);
                }
            }
            (Some(Value::Array(_)), _) | (_, Some(Value::Array(_))) => {
                self.out.push(unproven(&p, ChangeKind::KeywordChanged, "tuple `items` changed: cannot prove compatible".into()))
            }
            (a, b) => {
                let t = Value::Bool(true);
                self.node(&p, a.unwrap_or(&t), b.unwrap_or(&t), depth + 1);
            }
        }
    }

    fn other_keywords(&mut self, path: &str, o: &Map<String, Value>, n: &Map<String, Value>) {
        let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for k in keys {
            if HANDLED.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()) {
                continue;
            }
            match (o.get(k), n.get(k)) {
                (a, b) if a == b => {}
                (None, Some(b)) => {
                    self.out.push(change(path, ChangeKind::KeywordChanged, Impact::Writers, format!("{k} {} added", compact(b))))
                }
                (Some(a), None) => {
                    self.out.push(change(path, ChangeKind::KeywordChanged, Impact::Readers, format!("{k} {} removed", compact(a))))
                }
                (Some(a), Some(b)) => self.out.push(unproven(
                    path,
                    ChangeKind::KeywordChanged,
                    format!("{k} {} → {}: cannot prove compatible", compact(a), compact(b)),
                )),
                (None, None) => {}
            }
        }
    }
}
