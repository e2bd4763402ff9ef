//! The middleware every product route passes, and the `access_audit` documents it writes.
//!
//! One request, one document: who (user, roles, client address), what (method, route, the path
//! as received, the record id), on which product, the decision and its reason, and the status
//! answered, including requests refused before any handler ran (unknown route, 405, an
//! unreadable path). Values taken from the request are bounded and escaped, so a 60 KB product
//! segment or a newline costs the audit a few hundred bytes. The audit fails closed: a response
//! whose document cannot be written is replaced by a 503. Requests without valid credentials
//! are limited per client address first ([`super::limit`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, histogram};
use mongodb::bson::{DateTime, Document, doc};
use tracing::error;

use super::aliases::decoded_segments;
use super::guard::{Caller, Decision, perm_name};
use super::limit::Admission;
use super::problem::Problem;
use super::{API_RATE_LIMITED_TOTAL, API_REQUEST_SECONDS, API_REQUESTS_TOTAL, Api};
use crate::product::model::Permission;
use crate::sink::mongo::ACCESS_AUDIT;

/// Longest path kept in an audit document, in characters (after escaping).
pub const MAX_AUDIT_PATH: usize = 512;
/// Longest product segment or record id kept, in characters (after escaping).
pub const MAX_AUDIT_VALUE: usize = 128;

/// At most `max` characters of `s`, with control characters, `\` and non-ASCII escaped
/// (`\n`, `\u{202e}`), and a marker saying how much was cut.
pub fn bounded(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 24);
    let mut chars = 0;
    for (i, c) in s.char_indices() {
        let plain = (c.is_ascii_graphic() && c != '\\') || c == ' ';
        let piece: String = if plain { c.to_string() } else { c.escape_default().collect() };
        // Escapes are ASCII: bytes are characters.
        if chars + piece.len() > max {
            out.push_str(&format!("…[{} more bytes]", s.len() - i));
            return out;
        }
        chars += piece.len();
        out.push_str(&piece);
    }
    out
}

/// The permission a method needs when no handler said otherwise.
fn permission_of(method: &Method) -> Permission {
    if method == Method::GET || method == Method::HEAD { Permission::Read } else { Permission::Write }
}

/// Authenticates, limits anonymous callers, bounds the request's time, audits the outcome.
pub async fn gate(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let caller = Caller::new(api.authenticate(req.headers()).await);
    if caller.principal.is_err()
        && let Some(ip) = client
        && let Admission::Refused { first } = api.limiter.admit(ip, Instant::now())
    {
        counter!(API_RATE_LIMITED_TOTAL).increment(1);
        let mut resp = Problem::too_many_requests("too many requests without valid credentials from this address").into_response();
        if first {
            caller.decide(fallback_decision(&api, &caller, &method, &path, matched.as_deref(), StatusCode::TOO_MANY_REQUESTS));
            resp = api.audited(&caller, &method, &path, client, resp).await;
        }
        record(matched.as_deref().unwrap_or("unmatched"), &method, resp.status(), start);
        return resp;
    }
    let _ = req.extensions_mut().insert(caller.clone());
    let resp = match tokio::time::timeout(api.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Problem::request_timeout("the request was not complete within the request timeout").into_response(),
    };
    if caller.decision().is_none() {
        caller.decide(fallback_decision(&api, &caller, &method, &path, matched.as_deref(), resp.status()));
    }
    let alias = caller.decision().is_some_and(|d| d.alias);
    let resp = api.audited(&caller, &method, &path, client, resp).await;
    let label = match (&matched, alias) {
        (Some(m), _) => m.as_str(),
        (None, true) => "alias",
        (None, false) => "unmatched",
    };
    record(label, &method, resp.status(), start);
    resp
}

/// The decision for a request no handler decided on (no route, 405, an unreadable request, a
/// timeout before the guard, or a rate-limited caller).
fn fallback_decision(api: &Api, caller: &Caller, method: &Method, path: &str, matched: Option<&str>, status: StatusCode) -> Decision {
    let first = decoded_segments(path).and_then(|s| s.into_iter().next()).unwrap_or_default();
    let (product, requested) = match api.catalog.product(&first) {
        Some(p) => (p.name().to_owned(), None),
        None if first == "products" => ("*".to_owned(), None),
        None => ("unknown".to_owned(), Some(first)),
    };
    let reason = match caller.principal.as_ref().err() {
        Some(e) if status == StatusCode::TOO_MANY_REQUESTS => {
            format!("{}; rate limited (further refusals from this address are counted, not audited)", e.reason())
        }
        Some(e) => format!("refused before authorization ({}); credentials: {}", status.as_u16(), e.reason()),
        None => format!("refused before authorization ({})", status.as_u16()),
    };
    Decision {
        user: caller.user().to_owned(),
        roles: Vec::new(),
        product,
        requested,
        route: matched.unwrap_or("unmatched").to_owned(),
        alias: false,
        record_id: None,
        permission: permission_of(method),
        allowed: false,
        reason,
    }
}

impl Api {
    /// Writes the audit document of `resp`; a document that cannot be written turns the answer
    /// into a 503.
    async fn audited(&self, caller: &Caller, method: &Method, path: &str, client: Option<std::net::IpAddr>, resp: Response) -> Response {
        let Some(d) = caller.decision() else { return resp };
        let status = resp.status();
        let mut doc = doc! {
            "_id": uuid::Uuid::new_v4().to_string(),
            "at": DateTime::now(),
            "user": bounded(&d.user, MAX_AUDIT_VALUE),
            "roles": d.roles.iter().map(|r| bounded(r, MAX_AUDIT_VALUE)).collect::<Vec<_>>(),
            "product": &d.product,
            "method": bounded(method.as_str(), 16),
            "route": bounded(&d.route, MAX_AUDIT_VALUE),
            "path": bounded(path, MAX_AUDIT_PATH),
            "permission": perm_name(d.permission),
            "outcome": if d.allowed { "allowed" } else { "denied" },
            "reason": bounded(&d.reason, MAX_AUDIT_PATH),
            "status": i32::from(status.as_u16()),
            "client": client.map(|c| c.to_string()),
        };
        if let Some(r) = &d.requested {
            let _ = doc.insert("requested_product", bounded(r, MAX_AUDIT_VALUE));
        }
        if let Some(r) = &d.record_id {
            let _ = doc.insert("record_id", bounded(r, MAX_AUDIT_VALUE));
        }
        // Fail closed: a decision that cannot be audited is not served.
        match self.db.collection::<Document>(ACCESS_AUDIT).insert_one(doc).await {
            Ok(_) => resp,
            Err(e) => {
                error!(error = %e, "cannot write the access audit");
                Problem::unavailable("the access audit cannot be written").into_response()
            }
        }
    }
}

/// Counts a request by route template, method and status.
pub fn record(route: &str, method: &Method, status: StatusCode, start: Instant) {
    counter!(API_REQUESTS_TOTAL, "route" => route.to_owned(), "method" => method_label(method), "status" => status.as_u16().to_string())
        .increment(1);
    histogram!(API_REQUEST_SECONDS, "route" => route.to_owned()).record(start.elapsed().as_secs_f64());
}

/// A method from a fixed set, for labels.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_escapes_and_cuts() {
        assert_eq!(bounded("payments", 64), "payments");
        assert_eq!(bounded("a\nb\\c", 64), "a\\nb\\\\c");
        assert_eq!(bounded("\u{202e}x", 64), "\\u{202e}x");
        let long = "x".repeat(60 * 1024);
        let b = bounded(&long, 128);
        assert!(b.starts_with(&"x".repeat(128)) && b.ends_with(&format!("[{} more bytes]", 60 * 1024 - 128)), "{b}");
        assert!(b.len() < 200);
    }
}
