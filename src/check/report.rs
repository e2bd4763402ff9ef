//! The `check` report: counts, violations grouped by path and keyword with examples and line
//! numbers, completeness and freshness against the contract's SLAs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::contract::Contract;
use crate::verdict::{Evaluation, Stage};

/// How many line references are kept per violation group.
const MAX_LINES: usize = 10;

/// A location of a record: input name and 1-based line (or record number for Avro).
#[derive(Debug, Clone, Serialize)]
pub struct At {
    /// Input name.
    pub input: String,
    /// Line or record number (`scan`: the row's or document's rank in key order).
    pub line: u64,
    /// The record's key (`scan`: the bound key column or field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Violations sharing a path and keyword.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// JSON pointer.
    pub path: String,
    /// Keyword.
    pub keyword: String,
    /// The business rule, for keyword `rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// How many records.
    pub count: u64,
    /// The first message seen.
    pub example: String,
    /// The first few locations.
    pub lines: Vec<At>,
}

/// Completeness summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletenessSummary {
    /// Required fields present, over all records.
    pub present: u64,
    /// Required fields applicable, over all records.
    pub applicable: u64,
    /// Share present, in percent.
    pub percent: f64,
    /// Records with every required field.
    pub complete_records: u64,
    /// The contract's SLA.
    pub sla: String,
    /// Whether the share meets the SLA.
    pub meets_sla: bool,
}

/// Freshness summary (seconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FreshnessSummary {
    /// Records with an event time.
    pub measured: u64,
    /// Records without one.
    pub without_event_time: u64,
    /// Median age.
    pub p50_seconds: Option<f64>,
    /// 99th percentile age.
    pub p99_seconds: Option<f64>,
    /// Oldest.
    pub max_seconds: Option<f64>,
    /// The contract's SLA.
    pub sla: String,
    /// Records older than the SLA.
    pub over_sla: u64,
}

/// What `scan` read: the bound table or collection and how fresh it is (absent for `check`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    /// `mysql table payments` / `mongodb collection banking.payment_analytics`.
    pub source: String,
    /// The key rows or documents are reported by.
    pub key: String,
    /// The event-time columns or fields, the first non-null one of a record counts.
    pub event_time: Vec<String>,
    /// The newest event time read (RFC 3339), if any record has one.
    pub newest_event_time: Option<String>,
    /// Now − the newest event time: how stale the source is (0 for one in the future).
    pub freshness_seconds: Option<f64>,
    /// Whether that age is within the contract's freshness SLA.
    pub meets_freshness_sla: Option<bool>,
    /// Pages read.
    pub pages: u64,
    /// Seconds the scan took.
    pub elapsed_seconds: f64,
}

/// A shadow version's would-be rejections.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowSummary {
    /// The shadow version.
    pub version: String,
    /// Its schema file.
    pub schema: String,
    /// Records it would reject.
    pub would_reject: u64,
    /// Of those, records the applied version accepts: what enforcing it would add.
    pub would_reject_accepted: u64,
    /// Its violations by path and keyword, most frequent first.
    pub violations: Vec<Group>,
    #[serde(skip)]
    groups: BTreeMap<(String, String, Option<String>), Group>,
}

impl ShadowSummary {
    /// An empty summary for shadow version `c`.
    pub fn new(c: &Contract) -> Self {
        Self {
            version: c.version.clone(),
            schema: c.schema_file.display().to_string(),
            would_reject: 0,
            would_reject_accepted: 0,
            violations: Vec::new(),
            groups: BTreeMap::new(),
        }
    }
}

/// The whole report for one contract.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Product name.
    pub product: String,
    /// Contract name.
    pub contract: String,
    /// Contract version.
    pub version: String,
    /// Schema file.
    pub schema: String,
    /// Inputs read.
    pub inputs: Vec<String>,
    /// Records read.
    pub records: u64,
    /// Valid records.
    pub valid: u64,
    /// Invalid records.
    pub invalid: u64,
    /// Invalid because undecodable.
    pub undecodable: u64,
    /// Records rejected by an `error` business rule (they hold to the schema); absent when the
    /// contract has no rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_violations: Option<u64>,
    /// Violation groups, most frequent first.
    pub violations: Vec<Group>,
    /// Failed `warn` rules, by rule, most frequent first: counted, the records pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_warnings: Vec<Group>,
    /// Records whose `unique` key repeats an earlier record's; absent without `unique`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    /// Where the first duplicates are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicate_lines: Vec<At>,
    /// What each shadow version of the contract would have rejected (nothing is rejected on
    /// its account).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowSummary>,
    /// Completeness.
    pub completeness: CompletenessSummary,
    /// Freshness.
    pub freshness: FreshnessSummary,
    /// The table or collection `scan` read; absent for `check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSummary>,
    #[serde(skip)]
    groups: BTreeMap<(String, String, Option<String>), Group>,
    #[serde(skip)]
    warning_groups: BTreeMap<(String, String, Option<String>), Group>,
    #[serde(skip)]
    ages: Vec<Duration>,
    #[serde(skip)]
    sla: Duration,
}

impl Report {
    /// An empty report for `contract`.
    pub fn new(contract: &Contract) -> Self {
        Self {
            product: contract.product.clone(),
            contract: contract.name.clone(),
            version: contract.version.clone(),
            schema: contract.schema_file.display().to_string(),
            inputs: Vec::new(),
            records: 0,
            valid: 0,
            invalid: 0,
            undecodable: 0,
            rule_violations: (!contract.rules.is_empty()).then_some(0),
            violations: Vec::new(),
            rule_warnings: Vec::new(),
            shadow: Vec::new(),
            duplicates: None,
            duplicate_lines: Vec::new(),
            completeness: CompletenessSummary { sla: contract.quality.completeness.to_string(), ..Default::default() },
            freshness: FreshnessSummary { sla: contract.quality.freshness.to_string(), ..Default::default() },
            source: None,
            groups: BTreeMap::new(),
            warning_groups: BTreeMap::new(),
            ages: Vec::new(),
            sla: contract.quality.freshness.0,
        }
    }

    /// Adds one evaluated record found at `at`.
    pub fn add(&mut self, at: &At, eval: &Evaluation) {
        self.records += 1;
        match &eval.rejection {
            None => self.valid += 1,
            Some(r) => {
                self.invalid += 1;
                if r.stage == Stage::Decode {
                    self.undecodable += 1;
                }
                if r.class == "rule_violation"
                    && let Some(n) = &mut self.rule_violations
                {
                    *n += 1;
                }
                add_groups(&mut self.groups, &r.violations, at);
            }
        }
        add_groups(&mut self.warning_groups, &eval.warnings, at);
        let c = eval.completeness;
        self.completeness.present += u64::from(c.present);
        self.completeness.applicable += u64::from(c.applicable);
        // An undecodable record is never complete, even for a contract without required fields.
        let decoded = !eval.rejection.as_ref().is_some_and(|r| r.stage == Stage::Decode);
        if c.is_full() && decoded {
            self.completeness.complete_records += 1;
        }
        match eval.freshness {
            Some(age) => {
                self.freshness.measured += 1;
                if age > self.sla {
                    self.freshness.over_sla += 1;
                }
                self.ages.push(age);
            }
            None => self.freshness.without_event_time += 1,
        }
    }

    /// Adds `part`: the report of a run of consecutive records of `input` (a chunk evaluated on
    /// another thread) whose line numbers count from the run's first line, `base` lines into the
    /// input. Parts must come in input order; then every count, example and line number is the
    /// one adding the records one by one gives, since a group keeps its first example and its
    /// first lines.
    pub fn absorb(&mut self, input: &str, base: u64, part: Report) {
        let at = |a: At| At { input: input.to_owned(), line: base + a.line, key: a.key };
        self.records += part.records;
        self.valid += part.valid;
        self.invalid += part.invalid;
        self.undecodable += part.undecodable;
        if let Some(n) = part.rule_violations {
            *self.rule_violations.get_or_insert(0) += n;
        }
        merge_groups(&mut self.groups, part.groups, at);
        merge_groups(&mut self.warning_groups, part.warning_groups, at);
        if let Some(n) = part.duplicates {
            *self.duplicates.get_or_insert(0) += n;
        }
        let room = MAX_LINES.saturating_sub(self.duplicate_lines.len());
        self.duplicate_lines.extend(part.duplicate_lines.into_iter().take(room).map(at));
        // Parts are made for the same contract: the same shadow versions in the same order.
        for (mine, theirs) in self.shadow.iter_mut().zip(part.shadow) {
            mine.would_reject += theirs.would_reject;
            mine.would_reject_accepted += theirs.would_reject_accepted;
            merge_groups(&mut mine.groups, theirs.groups, at);
        }
        let (c, p) = (&mut self.completeness, part.completeness);
        c.present += p.present;
        c.applicable += p.applicable;
        c.complete_records += p.complete_records;
        let (f, p) = (&mut self.freshness, part.freshness);
        f.measured += p.measured;
        f.without_event_time += p.without_event_time;
        f.over_sla += p.over_sla;
        self.ages.extend_from_slice(&part.ages);
    }

    /// Rejects an added record, valid until now, whose unique key repeats an earlier one's
    /// (`unique.deadLetter`): it counts as invalid with `violations`, as if it had been added
    /// with that rejection.
    pub fn reject_duplicate(&mut self, at: &At, violations: &[crate::contract::Violation]) {
        self.valid = self.valid.saturating_sub(1);
        self.invalid += 1;
        add_groups(&mut self.groups, violations, at);
    }

    /// Counts a record whose unique key repeats an earlier one.
    pub fn duplicate_at(&mut self, at: &At) {
        if let Some(n) = &mut self.duplicates {
            *n += 1;
        }
        if self.duplicate_lines.len() < MAX_LINES {
            self.duplicate_lines.push(at.clone());
        }
    }

    /// Adds the shadow versions' verdicts on the record at `at`; `accepted` is the applied
    /// version's verdict.
    pub fn add_shadows(&mut self, at: &At, accepted: bool, verdicts: &[crate::verdict::ShadowVerdict]) {
        for v in verdicts {
            let Some(rejection) = &v.rejection else { continue };
            if let Some(summary) = self.shadow.iter_mut().find(|s| s.version == v.version) {
                summary.would_reject += 1;
                summary.would_reject_accepted += u64::from(accepted);
                add_groups(&mut summary.groups, &rejection.violations, at);
            }
        }
    }

    /// Computes the summaries; call once after the last record.
    pub fn finish(&mut self, contract: &Contract) {
        let mut groups: Vec<Group> = std::mem::take(&mut self.groups).into_values().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        self.violations = groups;
        let mut warnings: Vec<Group> = std::mem::take(&mut self.warning_groups).into_values().collect();
        warnings.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
        self.rule_warnings = warnings;
        for summary in &mut self.shadow {
            let mut groups: Vec<Group> = std::mem::take(&mut summary.groups).into_values().collect();
            groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
            summary.violations = groups;
        }
        let c = &mut self.completeness;
        c.percent = if c.applicable == 0 { 100.0 } else { c.present as f64 * 100.0 / c.applicable as f64 };
        c.meets_sla = contract.quality.completeness.is_met_by(c.present, c.applicable);
        self.ages.sort_unstable();
        let pick = |q: f64| -> Option<f64> {
            if self.ages.is_empty() {
                return None;
            }
            let idx = ((self.ages.len() - 1) as f64 * q).round() as usize;
            self.ages.get(idx).map(Duration::as_secs_f64)
        };
        self.freshness.p50_seconds = pick(0.50);
        self.freshness.p99_seconds = pick(0.99);
        self.freshness.max_seconds = self.ages.last().map(Duration::as_secs_f64);
    }
}

/// Counts each of a record's violations once per (path, keyword, rule) group, even if a keyword
/// fails twice at one path.
fn add_groups(groups: &mut BTreeMap<(String, String, Option<String>), Group>, violations: &[crate::contract::Violation], at: &At) {
    let mut seen = Vec::new();
    for v in violations {
        let key = (v.path.clone(), v.keyword.clone(), v.rule.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let group = groups.entry(key).or_insert_with(|| Group {
            path: v.path.clone(),
            keyword: v.keyword.clone(),
            rule: v.rule.clone(),
            count: 0,
            example: v.message.clone(),
            lines: Vec::new(),
        });
        group.count += 1;
        if group.lines.len() < MAX_LINES {
            group.lines.push(at.clone());
        }
    }
}

/// Adds the groups of a later part (`absorb`), its locations moved by `at`.
fn merge_groups(
    groups: &mut BTreeMap<(String, String, Option<String>), Group>,
    part: BTreeMap<(String, String, Option<String>), Group>,
    at: impl Fn(At) -> At,
) {
    for (key, theirs) in part {
        let group = groups.entry(key).or_insert_with(|| Group {
            path: theirs.path.clone(),
            keyword: theirs.keyword.clone(),
            rule: theirs.rule.clone(),
            count: 0,
            example: theirs.example.clone(),
            lines: Vec::new(),
        });
        group.count += theirs.count;
        let room = MAX_LINES.saturating_sub(group.lines.len());
        group.lines.extend(theirs.lines.into_iter().take(room).map(&at));
    }
}

fn render_groups(s: &mut String, groups: &[Group]) {
    for g in groups {
        let path = match &g.rule {
            Some(rule) => format!("rule {rule}"),
            None if g.path.is_empty() => "/".to_owned(),
            None => g.path.clone(),
        };
        let more = if g.count as usize > g.lines.len() { ", …" } else { "" };
        // `scan` reports records by key, `check` by line.
        let (what, at): (&str, Vec<String>) = if g.lines.iter().all(|a| a.key.is_some()) && !g.lines.is_empty() {
            ("keys", g.lines.iter().filter_map(|a| a.key.clone()).collect())
        } else {
            ("lines", g.lines.iter().map(|a| a.line.to_string()).collect())
        };
        let _ = writeln!(s, "    {path:<24} {:<14} {:>6}  {what} {}{more}", g.keyword, g.count, at.join(", "));
        let _ = writeln!(s, "      e.g. {}", g.example);
    }
}

/// Seconds as a short human duration.
fn human(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1}s")
    } else if seconds < 7_200.0 {
        format!("{:.1}m", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.1}h", seconds / 3_600.0)
    } else {
        format!("{:.1}d", seconds / 86_400.0)
    }
}

/// The human report.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} / {} {}  ({})", r.product, r.contract, r.version, r.schema);
    let _ = writeln!(s, "  inputs        {}", r.inputs.join(", "));
    match r.rule_violations {
        None => {
            let _ = writeln!(
                s,
                "  records       {}  valid {}  invalid {} (undecodable {}, contract violations {})",
                r.records,
                r.valid,
                r.invalid,
                r.undecodable,
                r.invalid - r.undecodable
            );
        }
        Some(rules) => {
            let _ = writeln!(
                s,
                "  records       {}  valid {}  invalid {} (undecodable {}, schema violations {}, rule violations {rules})",
                r.records,
                r.valid,
                r.invalid,
                r.undecodable,
                r.invalid - r.undecodable - rules
            );
        }
    }
    if !r.violations.is_empty() {
        let _ = writeln!(s, "  violations by path and keyword:");
        render_groups(&mut s, &r.violations);
    }
    if !r.rule_warnings.is_empty() {
        let _ = writeln!(s, "  rule warnings (counted; the records pass):");
        render_groups(&mut s, &r.rule_warnings);
    }
    if let Some(d) = r.duplicates {
        let lines: Vec<String> = r.duplicate_lines.iter().map(|a| a.line.to_string()).collect();
        let more = if d as usize > lines.len() { ", …" } else { "" };
        let at = if lines.is_empty() { String::new() } else { format!("  lines {}{more}", lines.join(", ")) };
        let _ = writeln!(s, "  duplicates    {d} record(s) repeat the unique key of an earlier one{at}");
    }
    for sh in &r.shadow {
        let _ = writeln!(
            s,
            "  shadow {} ({}): would reject {} of {} records, {} of them accepted by {} (nothing rejected on its account)",
            sh.version, sh.schema, sh.would_reject, r.records, sh.would_reject_accepted, r.version
        );
        render_groups(&mut s, &sh.violations);
    }
    let c = &r.completeness;
    let _ = writeln!(
        s,
        "  completeness  {:.2}% of required fields present, {} of {} records complete (SLA {}: {})",
        c.percent,
        c.complete_records,
        r.records,
        c.sla,
        if c.meets_sla { "met" } else { "BREACHED" }
    );
    let f = &r.freshness;
    match (f.p50_seconds, f.p99_seconds, f.max_seconds) {
        (Some(p50), Some(p99), Some(max)) => {
            let _ = writeln!(
                s,
                "  freshness     p50 {}  p99 {}  max {}  ({} of {} older than the SLA {}; {} without event time)",
                human(p50),
                human(p99),
                human(max),
                f.over_sla,
                f.measured,
                f.sla,
                f.without_event_time
            );
        }
        _ => {
            let _ = writeln!(s, "  freshness     no record has an event time");
        }
    }
    if let Some(src) = &r.source {
        let newest = match (&src.newest_event_time, src.freshness_seconds, src.meets_freshness_sla) {
            (Some(t), Some(age), Some(met)) => {
                format!("newest event {t}, {} old (SLA {}: {})", human(age), f.sla, if met { "met" } else { "BREACHED" })
            }
            _ => format!("no record has an event time ({})", src.event_time.join(", ")),
        };
        let _ = writeln!(s, "  source        {newest}");
        let rate = if src.elapsed_seconds > 0.0 { r.records as f64 / src.elapsed_seconds } else { 0.0 };
        let _ =
            writeln!(s, "  read          {} records in {} pages, {:.2}s ({rate:.0} records/s)", r.records, src.pages, src.elapsed_seconds);
    }
    let verdict = if r.invalid == 0 {
        "PASS: every record holds to the contract".to_owned()
    } else {
        format!("FAIL: {} of {} records break the contract", r.invalid, r.records)
    };
    let _ = writeln!(s, "  {verdict}");
    s
}
