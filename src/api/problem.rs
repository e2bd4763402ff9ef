//! RFC 9457 problem documents (`application/problem+json`) with stable `type` URIs.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// Base of every problem `type`.
pub const TYPE_BASE: &str = "https://meshguard.dev/problems/";

/// One offending input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path of the field in the request (`filter.and[0].op`, `limit`, `body`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A problem response.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Last segment of the `type` URI (`not-found`, …).
    pub kind: &'static str,
    /// Short, stable summary.
    pub title: &'static str,
    /// This occurrence.
    pub detail: String,
    /// For 400: the offending fields.
    pub errors: Vec<FieldError>,
    /// For 500 `contract-violation`: the violations.
    pub violations: Option<serde_json::Value>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, kind, title, detail: detail.into(), errors: Vec::new(), violations: None }
    }

    /// 400 with field errors.
    pub fn bad_request(errors: Vec<FieldError>) -> Self {
        let detail = errors.first().map(|e| format!("{}: {}", e.field, e.message)).unwrap_or_else(|| "invalid request".into());
        Self { errors, ..Self::new(StatusCode::BAD_REQUEST, "invalid-request", "The request is invalid", detail) }
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Access denied", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 405.
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", detail)
    }

    /// 408: the request (its body included) did not arrive within the request timeout.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "The request took too long", detail)
    }

    /// 429: too many requests without valid credentials from one address.
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", detail)
    }

    /// 500: a stored record no longer satisfies its contract.
    pub fn contract_violation(detail: impl Into<String>, violations: serde_json::Value) -> Self {
        Self {
            violations: Some(violations),
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "contract-violation", "The record violates its data contract", detail)
        }
    }

    /// 503: MongoDB is down or refused a read.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "A backing store is unavailable", detail)
    }

    /// The document.
    pub fn body(&self) -> serde_json::Value {
        let mut v = json!({
            "type": format!("{TYPE_BASE}{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            v["errors"] = json!(self.errors);
        }
        if let Some(violations) = &self.violations {
            v["violations"] = violations.clone();
        }
        v
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut r = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"))], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let _ = r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"meshguard\""));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            let _ = r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            let _ = r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}
