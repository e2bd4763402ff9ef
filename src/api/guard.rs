//! Authorization: who may do what on which product, decided once per request and handed to the
//! audit. Reads (GET, search, validate) need `read`; methods that change state need `write`;
//! `admin` implies both.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, header};
use metrics::counter;
use mongodb::bson::{Document, doc};

use super::auth::{AuthError, Principal};
use super::problem::Problem;
use super::store::unavailable;
use super::{ACCESS_DENIALS_TOTAL, Api};
use crate::product::Product;
use crate::product::model::Permission;
use crate::sink::mongo::USERS;

/// What the handler decided, for the audit document the middleware writes.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The user id, or `anonymous`.
    pub user: String,
    /// The roles the decision used.
    pub roles: Vec<String>,
    /// A product of the catalog, `*` (the product list) or `unknown`.
    pub product: String,
    /// The product segment of the request when it names no product (bounded and escaped by
    /// the audit).
    pub requested: Option<String>,
    /// The route template (or the alias as declared).
    pub route: String,
    /// Whether the route is a declared alias (its metric label is `alias`).
    pub alias: bool,
    /// The record the request is about, if any.
    pub record_id: Option<String>,
    /// The permission needed.
    pub permission: Permission,
    /// Whether access was granted.
    pub allowed: bool,
    /// Why.
    pub reason: String,
}

/// The authenticated (or not) caller of one request, and where its handler leaves the decision.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal, or why the credentials were refused.
    pub principal: Result<Principal, AuthError>,
    /// Filled by [`Api::guard`], read by the audit middleware.
    slot: Arc<Mutex<Option<Decision>>>,
}

impl Caller {
    /// A caller whose decision is still to be made.
    pub fn new(principal: Result<Principal, AuthError>) -> Self {
        Self { principal, slot: Arc::new(Mutex::new(None)) }
    }

    /// Records the decision (the last one wins).
    pub fn decide(&self, d: Decision) {
        *self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(d);
    }

    /// The decision, if the handler made one.
    pub fn decision(&self) -> Option<Decision> {
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The user for the audit.
    pub fn user(&self) -> &str {
        self.principal.as_ref().map_or("anonymous", |p| p.user.as_str())
    }
}

/// Where a request is going: what the guard needs besides the caller.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The product segment, as decoded.
    pub product: &'a str,
    /// The permission the operation needs.
    pub permission: Permission,
    /// The route template or alias.
    pub route: &'a str,
    /// Whether `route` is a declared alias.
    pub alias: bool,
    /// The record id in the path, if any.
    pub record_id: Option<&'a str>,
}

impl Api {
    /// Authenticates from the headers. A repeated `Authorization` or `X-Api-Key` header is
    /// refused: which one a proxy or the server would read is ambiguous.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        for name in [header::AUTHORIZATION.as_str(), "x-api-key"] {
            if headers.get_all(name).iter().count() > 1 {
                return Err(AuthError::Invalid("a credential header is repeated"));
            }
        }
        let text = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| AuthError::Invalid("a credential header is not ASCII")));
        let authorization = text(header::AUTHORIZATION.as_str()).transpose()?;
        let api_key = text("x-api-key").transpose()?;
        self.auth.authenticate(authorization, api_key).await
    }

    /// Authenticated? Known product? Permitted? Records the decision for the audit; 401, 404
    /// and 403 as problems.
    pub async fn guard(&self, caller: &Caller, t: Target<'_>) -> Result<&Product, Problem> {
        let product = self.catalog.product(t.product);
        let decision = |user: &str, roles: Vec<String>, allowed: bool, reason: String| Decision {
            user: user.to_owned(),
            roles,
            product: product.map_or("unknown", |p| p.name()).to_owned(),
            requested: product.is_none().then(|| t.product.to_owned()),
            route: t.route.to_owned(),
            alias: t.alias,
            record_id: t.record_id.map(str::to_owned),
            permission: t.permission,
            allowed,
            reason,
        };
        let principal = match &caller.principal {
            Ok(p) => p,
            Err(e) => {
                caller.decide(decision("anonymous", Vec::new(), false, e.reason().to_owned()));
                // The label set stays fixed: a product name from the URL counts only if it exists.
                denial(product.map_or("unknown", |p| p.name()), "none");
                return Err(Problem::unauthorized(e.reason()));
            }
        };
        let Some(p) = product else {
            caller.decide(decision(&principal.user, Vec::new(), false, "no such data product".into()));
            return Err(Problem::not_found("no data product by that name"));
        };
        let roles = self.roles(principal).await?;
        let allowed = may(p, &roles, t.permission);
        let reason = if allowed {
            format!("a role grants {}", perm_name(t.permission))
        } else {
            format!("no role of the user grants {} on {}", perm_name(t.permission), p.name())
        };
        let first_role = roles.first().cloned();
        caller.decide(decision(&principal.user, roles, allowed, reason.clone()));
        if !allowed {
            denial(p.name(), first_role.as_deref().unwrap_or("none"));
            return Err(Problem::forbidden(reason));
        }
        Ok(p)
    }

    /// The token's roles, or the seed's `getUserRoles` (MongoDB `users`).
    pub async fn roles(&self, principal: &Principal) -> Result<Vec<String>, Problem> {
        if let Some(r) = &principal.roles {
            return Ok(r.clone());
        }
        let user =
            self.db.collection::<Document>(USERS).find_one(doc! { "user_id": principal.user.as_str() }).await.map_err(unavailable)?;
        Ok(user
            .and_then(|u| u.get_array("roles").ok().map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect()))
            .unwrap_or_default())
    }
}

/// Whether one of `roles` grants `permission` on `p` (`admin` grants everything).
pub fn may(p: &Product, roles: &[String], permission: Permission) -> bool {
    p.decl
        .spec
        .access
        .iter()
        .any(|rule| roles.contains(&rule.role) && (rule.permissions.contains(&permission) || rule.permissions.contains(&Permission::Admin)))
}

/// The permission's name in the YAML and the audit.
pub fn perm_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Admin => "admin",
    }
}

/// Counts a denial (labels from the catalog and the YAML's roles only).
pub fn denial(product: &str, role: &str) {
    counter!(ACCESS_DENIALS_TOTAL, "product" => product.to_owned(), "role" => role.to_owned()).increment(1);
}
