//! Business rules beyond the schema: named CEL expressions over a record, compiled once at load.
//!
//! A rule sees each top-level field of the record as a variable of the same name (`amount > 0.0`)
//! and the whole record as `record` (`has(record.completed_at)` for an optional field). A rule
//! passes when it evaluates to `true`; `false` is a violation, and so is any evaluation error (a
//! missing field, a wrong type, a result that is not a bool), carrying the error — never a
//! panic. Severity `error` rejects the record like a schema violation (keyword `rule`, the rule's
//! name in [`Violation::rule`]); `warn` is only counted. Every failure is counted in
//! `meshguard_rule_violations_total{product,contract,version,rule,severity}` once the record's
//! outcome is final ([`crate::verdict::Tally`]), not here: a batch the stream evaluates again
//! after a sink failure would count twice.
//!
//! Fields are converted to CEL values only when a rule reads them (a variable resolver), so a
//! rule over two fields costs two conversions whatever the record's size.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::objects::{Key, Map};
use cel::{Context, Env, Program};
use serde_json::Value;

use super::{AnyRecord, RecordView, Violation};
use crate::product::model::{RuleSeverity, RuleSpec};

/// The variable that holds the whole record.
pub const RECORD_VARIABLE: &str = "record";

/// Longest rule message kept (an error may quote a large value).
const MAX_MESSAGE: usize = 300;

/// A rule that does not compile, named for `lint`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rule {rule:?} does not compile: {message}")]
pub struct RuleCompileError {
    /// The rule's name.
    pub rule: String,
    /// The CEL parser's message.
    pub message: String,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique within the contract; the metric label and the violation's `rule`.
    pub name: String,
    /// The CEL source, for messages.
    pub expr: String,
    /// What a failure does.
    pub severity: RuleSeverity,
    program: Program,
}

/// Every rule of a contract, compiled.
#[derive(Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Shared by every evaluation: the standard CEL functions and macros.
    env: Option<Arc<Env>>,
    /// `(product, contract)` for metric labels.
    labels: (String, String),
    /// The contract version, for metric labels (versions side by side count apart).
    version: String,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet").field("rules", &self.rules).field("labels", &self.labels).finish_non_exhaustive()
    }
}

/// What the rules found in one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOutcome {
    /// Failed `error` rules: the record is rejected.
    pub errors: Vec<Violation>,
    /// Failed `warn` rules: counted only.
    pub warnings: Vec<Violation>,
}

impl RuleSet {
    /// Compiles `specs`, or returns every rule that does not compile (or repeats a name).
    pub fn compile(product: &str, contract: &str, specs: &[RuleSpec]) -> Result<Self, Vec<RuleCompileError>> {
        if specs.is_empty() {
            return Ok(Self::default());
        }
        let env = Arc::new(Env::stdlib());
        let mut rules = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        for spec in specs {
            if rules.iter().any(|r: &Rule| r.name == spec.name) || errors.iter().any(|e: &RuleCompileError| e.rule == spec.name) {
                errors.push(RuleCompileError {
                    rule: spec.name.clone(),
                    message: "the name is used by another rule of this contract".into(),
                });
                continue;
            }
            if spec.name.is_empty() || !spec.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                errors.push(RuleCompileError {
                    rule: spec.name.clone(),
                    message: "a rule name is letters, digits, '-' and '_' (it is a metric label)".into(),
                });
                continue;
            }
            // The parser is third-party code: a panic on odd input is a compile error, not a crash.
            match catch_unwind(AssertUnwindSafe(|| env.compile(&spec.expr))) {
                Ok(Ok(program)) => rules.push(Rule { name: spec.name.clone(), expr: spec.expr.clone(), severity: spec.severity, program }),
                Ok(Err(e)) => errors.push(RuleCompileError { rule: spec.name.clone(), message: e.to_string().replace('\n', " ") }),
                Err(_) => {
                    errors.push(RuleCompileError { rule: spec.name.clone(), message: "the CEL parser failed on this expression".into() })
                }
            }
        }
        if errors.is_empty() {
            Ok(Self { rules, env: Some(env), labels: (product.to_owned(), contract.to_owned()), version: String::new() })
        } else {
            Err(errors)
        }
    }

    /// Labels this set's metrics with the contract version it belongs to.
    pub fn with_version(mut self, version: &str) -> Self {
        version.clone_into(&mut self.version);
        self
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The compiled rules, in declaration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// `(product, contract, version)`: the labels of this set's failures in
    /// `meshguard_rule_violations_total`.
    pub fn labels(&self) -> (&str, &str, &str) {
        (&self.labels.0, &self.labels.1, &self.version)
    }

    /// Runs every rule on `record`, appending failures to `out` (counted by the caller, once the
    /// record's outcome is final: [`crate::verdict::Tally`]).
    pub fn evaluate(&self, record: AnyRecord<'_>, out: &mut RuleOutcome) {
        let Some(env) = &self.env else { return };
        let vars = RecordVars { record, whole: std::sync::OnceLock::new() };
        let mut context = Context::with_env(Arc::clone(env));
        context.set_variable_resolver(&vars);
        for rule in &self.rules {
            let failure = match catch_unwind(AssertUnwindSafe(|| rule.program.execute(&context))) {
                Ok(Ok(cel::Value::Bool(true))) => continue,
                Ok(Ok(cel::Value::Bool(false))) => format!("rule {:?} failed: {}", rule.name, rule.expr),
                Ok(Ok(other)) => format!("rule {:?} gave {} instead of a bool: {}", rule.name, describe(&other), rule.expr),
                Ok(Err(e)) => format!("rule {:?} could not be evaluated ({}): {}", rule.name, explain(&e), rule.expr),
                Err(_) => format!("rule {:?} could not be evaluated (the evaluator failed): {}", rule.name, rule.expr),
            };
            let message = cut(failure);
            let violation = Violation { path: String::new(), keyword: "rule".into(), message, rule: Some(rule.name.clone()) };
            match rule.severity {
                RuleSeverity::Error => out.errors.push(violation),
                RuleSeverity::Warn => out.warnings.push(violation),
            }
        }
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let end = s.char_indices().map(|(i, _)| i).take_while(|i| *i <= MAX_MESSAGE - 3).last().unwrap_or(0);
        s.truncate(end);
        s.push('…');
    }
    s
}

fn describe(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::Null => "null",
        cel::Value::Int(_) => "an int",
        cel::Value::UInt(_) => "a uint",
        cel::Value::Float(_) => "a double",
        cel::Value::String(_) => "a string",
        cel::Value::Bytes(_) => "bytes",
        cel::Value::Bool(_) => "a bool",
        cel::Value::List(_) => "a list",
        cel::Value::Map(_) => "a map",
        _ => "a value",
    }
}

/// The evaluator's error, naming value *types* rather than printing values: a value's text can
/// be large, can hold personal data, and a map's prints in no stable order.
fn explain(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::UnsupportedBinaryOperator(op, a, b) => format!("operator '{op}' does not apply to {} and {}", describe(a), describe(b)),
        E::ValuesNotComparable(a, b) => format!("{} cannot be compared with {}", describe(a), describe(b)),
        E::UnsupportedTargetType { target } => format!("unsupported target: {}", describe(target)),
        E::NotSupportedAsMethod { method, target } => format!("'{method}' is not a method of {}", describe(target)),
        E::UnsupportedKeyType(v) => format!("{} cannot be a map key", describe(v)),
        E::UnsupportedIndex(i, v) => format!("{} cannot index {}", describe(i), describe(v)),
        E::DivisionByZero(_) => "division by zero".into(),
        E::RemainderByZero(_) => "remainder by zero".into(),
        E::Overflow(op, a, b) => format!("overflow in '{op}' on {} and {}", describe(a), describe(b)),
        E::IndexOutOfBounds(_) => "index out of bounds".into(),
        E::DuplicateKey(_) => "a map literal repeats a key".into(),
        other => other.to_string(),
    }
}

/// Resolves a rule's variables from the record on demand.
struct RecordVars<'a> {
    record: AnyRecord<'a>,
    /// The whole record as a CEL value, converted once per record however many rules and
    /// references read `record` (the resolver runs on every reference).
    whole: std::sync::OnceLock<cel::Value>,
}

fn node_to_cel(node: AnyRecord<'_>) -> cel::Value {
    match node {
        AnyRecord::Value(v) => to_cel(v, 0),
        AnyRecord::Tape(t) => to_cel(&t.value(), 0),
    }
}

impl VariableResolver for RecordVars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value = if variable == RECORD_VARIABLE {
            // A clone of a map or list value shares its contents (Arc).
            self.whole.get_or_init(|| node_to_cel(self.record)).clone()
        } else {
            node_to_cel(self.record.member(variable)?)
        };
        Box::<dyn cel::common::value::Val>::try_from(value).ok().map(CowVal::Owned)
    }
}

/// JSON nests at most this deep in CEL values (serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;

/// A JSON value as a CEL value: integers that fit stay integers, other numbers are doubles.
pub fn to_cel(v: &Value, depth: usize) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => cel::Value::Int(i),
            (_, Some(u), _) => cel::Value::UInt(u),
            (_, _, Some(f)) => cel::Value::Float(f),
            _ => cel::Value::Null,
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) if depth < MAX_DEPTH => cel::Value::List(Arc::new(a.iter().map(|x| to_cel(x, depth + 1)).collect())),
        Value::Object(o) if depth < MAX_DEPTH => {
            let map: std::collections::HashMap<Key, cel::Value> =
                o.iter().map(|(k, x)| (Key::String(Arc::new(k.clone())), to_cel(x, depth + 1))).collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
        _ => cel::Value::Null,
    }
}
