//! The REST endpoints a product declares in `spec.apis.rest.endpoints` (`/payments/{payment_id}`),
//! served as aliases of the main routes under the path of `spec.apis.rest.baseUrl`
//! (`https://api.banking.com/v1/payments` → `/v1/payments/payments/{payment_id}`, as OpenAPI
//! joins a server URL and a path; the host is the gateway's). Without a base path they are
//! served at the root. They are matched on the percent-decoded path, and with the main routes'
//! strictness: an empty segment (`//`) or a trailing slash matches nothing.

use percent_encoding::percent_decode_str;

use crate::product::Catalog;
use crate::product::model::BasePath;

/// A REST endpoint declared in a product's `spec.apis.rest.endpoints`, served as an alias.
#[derive(Debug, Clone)]
pub struct Alias {
    /// The path served, base path and endpoint (`/v1/payments/payments/{payment_id}/status`):
    /// the audit's route and the OpenAPI path.
    pub template: String,
    /// The product it serves.
    pub product: String,
    /// Static leading segments, base path's first (`["v1", "payments", "payments"]`), compared
    /// with decoded segments.
    pub(crate) prefix: Vec<String>,
    /// What it serves.
    pub kind: AliasKind,
    /// The path parameter's name (`payment_id`), when there is one: the status answer's key.
    pub param: Option<String>,
}

/// What an alias serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasKind {
    /// `GET /{x}/{id}`: the latest record.
    Record,
    /// `GET /{x}/{id}/status`: its `status` field.
    Status,
    /// `POST /{x}/search`.
    Search,
}

impl AliasKind {
    /// The method the alias answers (HEAD goes with GET).
    pub fn method(self) -> axum::http::Method {
        if self == Self::Search { axum::http::Method::POST } else { axum::http::Method::GET }
    }
}

impl Alias {
    /// Parses the supported shapes of an endpoint under a base path: static segments then
    /// `{param}`, `{param}/status` or `search`, with at least one static segment in all.
    pub fn parse(product: &str, base: &BasePath, endpoint: &str) -> Option<Self> {
        let trimmed = endpoint.trim_matches('/');
        let segs: Vec<&str> = trimmed.split('/').collect();
        let is_param = |s: &str| s.len() > 2 && s.starts_with('{') && s.ends_with('}');
        let is_static = |s: &str| !s.is_empty() && !s.contains(['{', '}']);
        let build = |prefix: &[&str], kind, param: Option<&str>| {
            let full: Vec<String> = base.segments.iter().cloned().chain(prefix.iter().map(|s| (*s).to_owned())).collect();
            (!full.is_empty() && prefix.iter().all(|s| is_static(s))).then(|| Self {
                template: format!("{}/{trimmed}", base.raw),
                product: product.to_owned(),
                prefix: full,
                kind,
                param: param.map(|p| p.trim_matches(['{', '}']).to_owned()),
            })
        };
        match segs.as_slice() {
            [prefix @ .., "search"] => build(prefix, AliasKind::Search, None),
            [prefix @ .., p, "status"] if is_param(p) => build(prefix, AliasKind::Status, Some(p)),
            [prefix @ .., p] if is_param(p) => build(prefix, AliasKind::Record, Some(p)),
            _ => None,
        }
    }

    /// The record id when the decoded segments match this alias (`Some("")` for search).
    pub fn matches(&self, segs: &[String]) -> Option<String> {
        let n = self.prefix.len();
        if segs.len() < n || segs[..n].iter().zip(&self.prefix).any(|(a, b)| a != b) {
            return None;
        }
        match (self.kind, &segs[n..]) {
            (AliasKind::Search, [s]) if s == "search" => Some(String::new()),
            (AliasKind::Record, [id]) if !id.is_empty() => Some(id.clone()),
            (AliasKind::Status, [id, s]) if !id.is_empty() && s == "status" => Some(id.clone()),
            _ => None,
        }
    }

    /// Whether the alias's first segment would shadow a main route or a product.
    pub(crate) fn is_reserved(&self, catalog: &Catalog) -> bool {
        let first = self.prefix[0].as_str();
        matches!(first, "products" | "healthz" | "metrics" | "openapi.json") || catalog.product(first).is_some()
    }
}

/// The decoded segments of a request path, or `None` when the path is not one the main routes
/// could match either: no leading `/`, an empty segment (`//`), a trailing `/`, or an escape
/// that does not decode to UTF-8.
pub fn decoded_segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    rest.split('/')
        .map(|seg| if seg.is_empty() { None } else { percent_decode_str(seg).decode_utf8().ok().map(|s| s.into_owned()) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        decoded_segments(path).unwrap_or_else(|| panic!("{path} should decode"))
    }

    #[test]
    fn aliases_parse_the_supported_shapes() {
        let root = BasePath::default();
        let a = Alias::parse("p", &root, "/payments/{payment_id}/status").unwrap_or_else(|| panic!("status"));
        assert_eq!(a.kind, AliasKind::Status);
        assert_eq!(a.param.as_deref(), Some("payment_id"));
        assert_eq!(a.matches(&segs("/payments/42/status")), Some("42".into()));
        assert_eq!(a.matches(&segs("/payments/42")), None);
        let a = Alias::parse("p", &root, "/cards/transactions/search").unwrap_or_else(|| panic!("search"));
        assert_eq!(a.kind, AliasKind::Search);
        assert_eq!(a.matches(&segs("/cards/transactions/search")), Some(String::new()));
        assert_eq!(a.matches(&segs("/cards/transactions")), None);
        let r = Alias::parse("p", &root, "/cards/transactions/{transaction_id}").unwrap_or_else(|| panic!("record"));
        assert_eq!(r.matches(&segs("/cards/transactions/t1")), Some("t1".into()));
        assert!(Alias::parse("p", &root, "/{x}/y").is_none());
    }

    #[test]
    fn aliases_are_served_under_the_base_path() {
        let base = BasePath::parse("https://api.banking.com/v1/my%20api/").unwrap_or_else(|e| panic!("{e}"));
        let a = Alias::parse("p", &base, "/payments/{payment_id}").unwrap_or_else(|| panic!("record"));
        assert_eq!(a.template, "/v1/my%20api/payments/{payment_id}");
        assert_eq!(a.matches(&segs("/v1/my%20api/payments/k%201")), Some("k 1".into()));
        assert_eq!(a.matches(&segs("/v1/my api/payments/k")), Some("k".into()));
        assert_eq!(a.matches(&segs("/payments/k")), None);
        assert_eq!(a.matches(&segs("/v1/payments/k")), None);
        // Under a base path an endpoint may be a parameter alone.
        let r = Alias::parse("p", &base, "/{id}").unwrap_or_else(|| panic!("bare param"));
        assert_eq!(r.matches(&segs("/v1/my%20api/k")), Some("k".into()));
        assert!(Alias::parse("p", &BasePath::default(), "/{id}").is_none());
    }

    #[test]
    fn paths_are_decoded_and_strict() {
        assert_eq!(segs("/payments/k%201"), vec!["payments", "k 1"]);
        assert_eq!(segs("/payments/a%2Fb"), vec!["payments", "a/b"]);
        assert_eq!(decoded_segments("/payments//k"), None);
        assert_eq!(decoded_segments("//payments/k"), None);
        assert_eq!(decoded_segments("/payments/k/"), None);
        assert_eq!(decoded_segments("/payments/%FF"), None);
        assert_eq!(decoded_segments("payments/k"), None);
    }
}
