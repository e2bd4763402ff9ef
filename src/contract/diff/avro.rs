//! Avro comparison. The verdict comes from `apache_avro`'s compatibility checker, which follows
//! the specification's schema-resolution rules (promotions, defaults, aliases, enum defaults,
//! unions); the listing walks both schemas side by side to name each change and its path, and
//! asks the same checker about every leaf so the two agree.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{RecordField, RecordSchema};
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use super::{AvroChecker, AvroResolution, Change, ChangeKind, Impact, join};

/// Nested schemas deeper than this are left to the checker.
const MAX_DEPTH: usize = 64;

/// The listing and the checker's verdicts.
pub(super) fn diff(old: &Schema, new: &Schema) -> (Vec<Change>, AvroChecker) {
    let checker = AvroChecker { backward: resolution(old, new), forward: resolution(new, old) };
    let mut w = Walker { old_names: names(old), new_names: names(new), out: Vec::new(), seen: Vec::new() };
    w.node("", old, new, 0);
    (w.out, checker)
}

/// When the checker finds a direction broken that no listed change explains, a root-level change
/// carries its reason, so the verdict and the listing never disagree.
pub(super) fn reconcile_with_checker(changes: &mut Vec<Change>, checker: &AvroChecker) {
    let narrows = checker.backward.verdict != "full";
    let widens = checker.forward.verdict != "full";
    let listed = changes.iter().fold(Impact::None, |acc, c| acc.or(c.impact));
    let missing_n = narrows && !listed.narrows();
    let missing_w = widens && !listed.widens();
    if missing_n || missing_w {
        let reason = [(missing_n, &checker.backward), (missing_w, &checker.forward)]
            .iter()
            .filter(|(m, _)| *m)
            .filter_map(|(_, r)| r.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        changes.push(Change {
            path: String::new(),
            kind: ChangeKind::Incompatible,
            message: format!("the Avro resolution rules reject this: {reason}"),
            impact: Impact::from_flags(missing_n, missing_w),
            provable: true,
        });
    }
}

fn resolution(writer: &Schema, reader: &Schema) -> AvroResolution {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => AvroResolution { verdict: "full", reason: None },
        Ok(Compatibility::Partial) => AvroResolution {
            verdict: "partial",
            reason: Some("resolution fails for some values (a union branch or enum symbol the reader lacks)".into()),
        },
        Err(e) => AvroResolution { verdict: "incompatible", reason: Some(e.to_string()) },
    }
}

/// Whether a reader on `reader` always reads data written with `writer`.
fn reads(writer: &Schema, reader: &Schema) -> bool {
    matches!(SchemaCompatibility::can_read(writer, reader), Ok(Compatibility::Full))
}

/// Every named type of a schema, by full name, to follow `Schema::Ref`.
fn names(schema: &Schema) -> HashMap<String, Schema> {
    fn walk(s: &Schema, out: &mut HashMap<String, Schema>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(name) = s.name()
            && !matches!(s, Schema::Ref { .. })
        {
            let _ = out.insert(name.fullname(None), s.clone());
        }
        match s {
            Schema::Record(r) => r.fields.iter().for_each(|f| walk(&f.schema, out, depth + 1)),
            Schema::Array(a) => walk(&a.items, out, depth + 1),
            Schema::Map(m) => walk(&m.types, out, depth + 1),
            Schema::Union(u) => u.variants().iter().for_each(|v| walk(v, out, depth + 1)),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    walk(schema, &mut out, 0);
    out
}

/// A short description of a schema for messages.
fn describe(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("record {}", r.name.name()),
        Schema::Enum(e) => format!("enum {}", e.name.name()),
        Schema::Fixed(f) => format!("fixed {}({})", f.name.name(), f.size),
        Schema::Ref { name } => name.name().to_owned(),
        Schema::Array(a) => format!("array<{}>", describe(&a.items)),
        Schema::Map(m) => format!("map<{}>", describe(&m.types)),
        Schema::Union(u) => format!("[{}]", u.variants().iter().map(describe).collect::<Vec<_>>().join(", ")),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        other => {
            let kind = format!("{:?}", apache_avro::schema::SchemaKind::from(other));
            let mut out = String::new();
            for (i, ch) in kind.chars().enumerate() {
                if ch.is_uppercase() && i > 0 {
                    out.push('-');
                }
                out.extend(ch.to_lowercase());
            }
            out
        }
    }
}

struct Walker {
    old_names: HashMap<String, Schema>,
    new_names: HashMap<String, Schema>,
    out: Vec<Change>,
    /// Named-type pairs being compared (recursive types).
    seen: Vec<(String, String)>,
}

fn change(path: &str, kind: ChangeKind, impact: Impact, message: String) -> Change {
    Change { path: path.to_owned(), kind, message, impact, provable: true }
}

impl Walker {
    fn deref<'s>(&'s self, s: &'s Schema, old: bool) -> &'s Schema {
        match s {
            Schema::Ref { name } => {
                let table = if old { &self.old_names } else { &self.new_names };
                table.get(&name.fullname(None)).unwrap_or(s)
            }
            _ => s,
        }
    }

    fn node(&mut self, path: &str, old: &Schema, new: &Schema, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let (o, n) = (self.deref(old, true).clone(), self.deref(new, false).clone());
        if let (Some(a), Some(b)) = (o.name(), n.name()) {
            let pair = (a.fullname(None), b.fullname(None));
            if self.seen.contains(&pair) {
                return;
            }
            self.seen.push(pair);
            if a.name() != b.name() {
                self.out.push(change(
                    path,
                    ChangeKind::NameChanged,
                    Impact::Both,
                    format!("type name {} → {}: Avro resolves named types by name", a.name(), b.name()),
                ));
                return;
            }
        }
        match (&o, &n) {
            (Schema::Record(a), Schema::Record(b)) => self.record(path, a, b, depth),
            (Schema::Enum(a), Schema::Enum(b)) => {
                for s in a.symbols.iter().filter(|s| !b.symbols.contains(s)) {
                    let impact = if b.default.is_some() { Impact::None } else { Impact::Writers };
                    let tail = if b.default.is_some() { " (NEW's enum default stands in for it)" } else { "" };
                    self.out.push(change(path, ChangeKind::EnumValueRemoved, impact, format!("enum symbol {s:?} removed{tail}")));
                }
                for s in b.symbols.iter().filter(|s| !a.symbols.contains(s)) {
                    let impact = if a.default.is_some() { Impact::None } else { Impact::Readers };
                    let tail = if a.default.is_some() { " (OLD's enum default stands in for it)" } else { "" };
                    self.out.push(change(path, ChangeKind::EnumValueAdded, impact, format!("enum symbol {s:?} added{tail}")));
                }
            }
            (Schema::Array(a), Schema::Array(b)) => self.node(&join(path, "[]"), &a.items, &b.items, depth + 1),
            (Schema::Map(a), Schema::Map(b)) => self.node(&join(path, "*"), &a.types, &b.types, depth + 1),
            (Schema::Union(a), Schema::Union(b)) => {
                for v in a.variants().iter().filter(|v| !b.variants().iter().any(|w| describe(w) == describe(v))) {
                    let impact = Impact::from_flags(!reads(v, &n), false);
                    self.out.push(change(path, ChangeKind::TypeChanged, impact, format!("union branch {} removed", describe(v))));
                }
                for v in b.variants().iter().filter(|v| !a.variants().iter().any(|w| describe(w) == describe(v))) {
                    let impact = Impact::from_flags(false, !reads(v, &o));
                    self.out.push(change(path, ChangeKind::TypeChanged, impact, format!("union branch {} added", describe(v))));
                }
                // Branches present in both: named records inside are compared field by field.
                for v in a.variants() {
                    if let Some(w) = b.variants().iter().find(|w| describe(w) == describe(v))
                        && matches!(self.deref(v, true), Schema::Record(_))
                    {
                        self.node(path, v, w, depth + 1);
                    }
                }
            }
            _ => {
                let (dold, dnew) = (describe(&o), describe(&n));
                if dold == dnew && o == n {
                    return;
                }
                let impact = Impact::from_flags(!reads(&o, &n), !reads(&n, &o));
                let how = match impact {
                    Impact::None => "(both directions resolve)",
                    Impact::Writers => "(OLD data cannot be read as NEW)",
                    Impact::Readers => "(a promotion: OLD readers cannot read NEW data)",
                    Impact::Both => "(neither direction resolves)",
                };
                self.out.push(change(path, ChangeKind::TypeChanged, impact, format!("type {dold} → {dnew} {how}")));
            }
        }
    }

    fn record(&mut self, path: &str, a: &RecordSchema, b: &RecordSchema, depth: usize) {
        // A field of NEW matches a field of OLD by name, or by one of NEW's aliases (the reader's
        // aliases, as in schema resolution).
        let find_old = |nf: &RecordField| -> Option<&RecordField> {
            std::iter::once(&nf.name).chain(nf.aliases.iter()).find_map(|n| a.fields.iter().find(|of| &of.name == n))
        };
        let mut matched: Vec<&str> = Vec::new();
        for nf in &b.fields {
            let p = join(path, &nf.name);
            match find_old(nf) {
                Some(of) => {
                    matched.push(&of.name);
                    if of.name != nf.name {
                        // An OLD reader looks for its own name in NEW data and finds nothing.
                        let impact = if of.default.is_some() { Impact::None } else { Impact::Readers };
                        self.out.push(change(
                            &join(path, &of.name),
                            ChangeKind::FieldRenamed,
                            impact,
                            format!(
                                "field {:?} renamed to {:?} (alias){}",
                                of.name,
                                nf.name,
                                if of.default.is_some() {
                                    ""
                                } else {
                                    ": readers on OLD find no field by its old name and it has no default"
                                }
                            ),
                        ));
                    }
                    self.node(&p, &of.schema, &nf.schema, depth + 1);
                }
                None if nf.default.is_some() => {
                    self.out.push(change(&p, ChangeKind::FieldAdded, Impact::None, format!("field {:?} added with a default", nf.name)))
                }
                None => self.out.push(change(
                    &p,
                    ChangeKind::FieldAdded,
                    Impact::Writers,
                    format!("field {:?} added without a default: NEW cannot read records written with OLD", nf.name),
                )),
            }
        }
        for of in a.fields.iter().filter(|of| !matched.contains(&of.name.as_str())) {
            let p = join(path, &of.name);
            if of.default.is_some() {
                self.out.push(change(
                    &p,
                    ChangeKind::FieldRemoved,
                    Impact::None,
                    format!("field {:?} removed (OLD readers use its default)", of.name),
                ));
            } else {
                self.out.push(change(
                    &p,
                    ChangeKind::FieldRemoved,
                    Impact::Readers,
                    format!("field {:?} removed: readers on OLD cannot read NEW records (the field has no default)", of.name),
                ));
            }
        }
    }
}
