//! Authentication: bearer JWTs verified by the `jsonwebtoken` crate, and API keys stored as
//! SHA-256 hashes. Nothing here logs a secret or a token.
//!
//! A token's `alg` picks the key family and nothing else can: HS256 only against the shared
//! secret, RS256 / ES256 only against an RSA / EC P-256 public key, from a PEM file or from the
//! identity provider's JWKS endpoint (looked up by `kid`; an unknown `kid` fetches the set again,
//! at most once per `auth.jwks_min_refresh_ms`). So an HS256 token "signed" with a public key is
//! refused. Claims: `exp` (required, 30 s leeway), `nbf`, `iss`, `aud`, `sub`, optional `roles`.
//! A `crit` header is refused: this server implements no JWS extension (RFC 7515 §4.1.11).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::AuthSettings;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Smallest accepted HS256 secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Largest JWKS document read, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user id (the token's `sub`, the API key's user, or `dev`).
    pub user: String,
    /// Roles from the token's `roles` claim; `None`: look them up in MongoDB `users`.
    pub roles: Option<Vec<String>>,
}

/// Why a request is not authenticated (the reason goes to the audit, never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` or `X-Api-Key` header.
    Missing,
    /// The credential is malformed, forged, expired or meant for someone else.
    Invalid(&'static str),
}

impl AuthError {
    /// A short reason for the audit and the problem detail.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "no credentials (Authorization: Bearer or X-Api-Key)",
            Self::Invalid(r) => r,
        }
    }
}

/// A setting of `[auth]` that cannot be used (the message names the key, never the value).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct AuthConfigError {
    /// The dotted key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn config_error(key: impl Into<String>, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError { key: key.into(), reason: reason.into() }
}

/// Why the JWKS could not be refreshed (logged; the keys already known stay in use).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The endpoint did not answer 200 in time.
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(#[from] reqwest::Error),
    /// The answer is too large.
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The answer is not a JWK set.
    #[error("the JWKS is not a JSON Web Key Set: {0}")]
    Parse(#[from] serde_json::Error),
}

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
struct Key {
    key: Arc<DecodingKey>,
    alg: Algorithm,
}

/// The identity provider's JWKS endpoint and the keys last read from it.
struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, Key>>,
    /// When the set was last fetched; the lock also makes concurrent refreshes wait for one.
    last: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl Jwks {
    fn get(&self, kid: &str) -> Option<Key> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(kid).cloned()
    }

    /// Fetches the set again unless that was done less than `min_interval` ago.
    async fn refresh(&self) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
            }
            Err(e) => warn!(url = %self.url, error = %e, "JWKS refresh failed; keeping the keys already known"),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, JwksError> {
        let mut resp = self.client.get(&self.url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let inferred = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
                _ => None,
            };
            let declared = jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok());
            // Only RS256 and ES256, and only when the declared algorithm fits the key.
            let alg = match (declared, inferred) {
                (None, Some(i)) => i,
                (Some(d), Some(i)) if d == i => d,
                _ => continue,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    let _ = keys.insert(kid, Key { key: Arc::new(key), alg });
                }
                Err(e) => warn!(kid = %kid, error = %e, "JWKS key skipped"),
            }
        }
        Ok(keys)
    }
}

/// The configured verifiers.
pub struct Authenticator {
    /// The HS256 shared secret, as a key.
    hs256: Option<Key>,
    /// The RS256 / ES256 public key of `auth.jwt_public_key_file`.
    pem: Option<Key>,
    /// The JWKS endpoint of `auth.jwks_url`.
    jwks: Option<Arc<Jwks>>,
    /// Required `iss`.
    issuer: String,
    /// Required `aud`.
    audience: String,
    /// `(user, sha256 of the key)`.
    keys: Vec<(String, [u8; 32])>,
    /// `--insecure-dev`: every request is this principal.
    dev: Option<Principal>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("public_key", &self.pem.as_ref().map(|k| k.alg))
            .field("jwks", &self.jwks.as_ref().map(|j| j.url.as_str()))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("api_keys", &self.keys.len())
            .field("insecure_dev", &self.dev.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifiers; an error names the bad setting (never its value).
    pub fn from_settings(auth: &AuthSettings) -> Result<Self, AuthConfigError> {
        let hs256 = if auth.jwt_hs256_secret.is_empty() {
            None
        } else if auth.jwt_hs256_secret.len() < MIN_SECRET_BYTES {
            return Err(config_error("auth.jwt_hs256_secret", format!("must be at least {MIN_SECRET_BYTES} bytes")));
        } else {
            let key = DecodingKey::from_secret(auth.jwt_hs256_secret.as_bytes())
                .map_err(|e| config_error("auth.jwt_hs256_secret", e.to_string()))?;
            Some(Key { key: Arc::new(key), alg: Algorithm::HS256 })
        };
        let pem = if auth.jwt_public_key_file.is_empty() {
            None
        } else {
            let key = "auth.jwt_public_key_file";
            let text =
                std::fs::read(&auth.jwt_public_key_file).map_err(|e| config_error(key, format!("{}: {e}", auth.jwt_public_key_file)))?;
            let parsed = DecodingKey::from_rsa_pem(&text)
                .map(|k| (k, Algorithm::RS256))
                .or_else(|_| DecodingKey::from_ec_pem(&text).map(|k| (k, Algorithm::ES256)))
                .map_err(|_| config_error(key, "is neither an RSA nor an EC P-256 public key in PEM"))?;
            Some(Key { key: Arc::new(parsed.0), alg: parsed.1 })
        };
        let jwks = if auth.jwks_url.is_empty() {
            None
        } else {
            if !(auth.jwks_url.starts_with("https://") || auth.jwks_url.starts_with("http://")) {
                return Err(config_error("auth.jwks_url", "must be an http:// or https:// URL"));
            }
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(auth.jwks_timeout_ms.max(1)))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| config_error("auth.jwks_url", e.to_string()))?;
            Some(Arc::new(Jwks {
                url: auth.jwks_url.clone(),
                client,
                keys: RwLock::new(HashMap::new()),
                last: tokio::sync::Mutex::new(None),
                min_interval: Duration::from_millis(auth.jwks_min_refresh_ms),
            }))
        };
        let mut keys = Vec::with_capacity(auth.api_keys.len());
        for (i, entry) in auth.api_keys.iter().enumerate() {
            let key = format!("auth.api_keys[{i}]");
            let Some((user, hex)) = entry.split_once(':') else {
                return Err(config_error(key, "must be \"user_id:sha256hex\""));
            };
            let hash = decode_hex32(hex).ok_or_else(|| config_error(key.clone(), "the hash must be 64 hex digits (SHA-256)"))?;
            if user.is_empty() {
                return Err(config_error(key, "the user id is empty"));
            }
            keys.push((user.to_owned(), hash));
        }
        Ok(Self { hs256, pem, jwks, issuer: auth.issuer.clone(), audience: auth.audience.clone(), keys, dev: None })
    }

    /// Whether any credential is configured.
    pub fn is_configured(&self) -> bool {
        self.hs256.is_some() || self.pem.is_some() || self.jwks.is_some() || !self.keys.is_empty()
    }

    /// Fetches the JWKS once at start-up, so the first requests need not wait for it. A
    /// failure is logged: the set is fetched again when a token names a key.
    pub async fn prefetch(&self) {
        if let Some(j) = &self.jwks {
            j.refresh().await;
        }
    }

    /// Development mode: every request is user `dev` with `role` (if any).
    pub fn insecure_dev(mut self, role: Option<String>) -> Self {
        self.dev = Some(Principal { user: "dev".into(), roles: Some(role.into_iter().collect()) });
        self
    }

    /// Authenticates from the `Authorization` and `X-Api-Key` header values.
    pub async fn authenticate(&self, authorization: Option<&str>, api_key: Option<&str>) -> Result<Principal, AuthError> {
        if let Some(dev) = &self.dev {
            return Ok(dev.clone());
        }
        if let Some(value) = authorization {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(AuthError::Invalid("the Authorization header is not a Bearer token"))?;
            return self.verify_jwt(token.trim()).await;
        }
        if let Some(key) = api_key {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let mut found = None;
            for (user, hash) in &self.keys {
                if constant_time_eq(hash, &digest) {
                    found = Some(user.clone());
                }
            }
            return found.map(|user| Principal { user, roles: None }).ok_or(AuthError::Invalid("unknown API key"));
        }
        Err(AuthError::Missing)
    }

    /// The key for a token's header: the `alg` chooses the family, the `kid` the JWKS key.
    async fn key_for(&self, header: &Header) -> Result<Key, AuthError> {
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or(AuthError::Invalid("HS256 tokens are not accepted by this server"))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let from_jwks = match (&self.jwks, &header.kid) {
                    (Some(jwks), Some(kid)) => match jwks.get(kid) {
                        Some(k) => Some(k),
                        None => {
                            jwks.refresh().await;
                            jwks.get(kid)
                        }
                    },
                    _ => None,
                };
                match (from_jwks, &self.pem, &self.jwks) {
                    (Some(k), _, _) => k,
                    (None, Some(k), _) if header.kid.is_none() || self.jwks.is_none() => k.clone(),
                    (None, _, Some(_)) => return Err(AuthError::Invalid("the token's key id is not in the identity provider's key set")),
                    (None, _, None) => return Err(AuthError::Invalid("RS256 and ES256 tokens are not accepted by this server")),
                }
            }
            _ => return Err(AuthError::Invalid("the token algorithm is not one of HS256, RS256, ES256")),
        };
        if key.alg != header.alg {
            return Err(AuthError::Invalid("the token algorithm does not match its key"));
        }
        Ok(key)
    }

    async fn verify_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid("the token is not a JWS compact serialization"))?;
        if header.crit.is_some() {
            return Err(AuthError::Invalid("the token header names critical extensions this server does not support"));
        }
        let key = self.key_for(&header).await?;
        let mut validation = Validation::new(key.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            AuthError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidIssuer => "the token issuer is not accepted",
                ErrorKind::InvalidAudience => "the token audience is not accepted",
                ErrorKind::InvalidSignature => "the token signature does not verify",
                ErrorKind::InvalidAlgorithm => "the token algorithm does not match its key",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud, sub)",
                ErrorKind::InvalidClaimFormat(_) => "a token claim has the wrong type",
                _ => "the token is malformed",
            })
        })?;
        let claims = data.claims;
        let sub =
            claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(AuthError::Invalid("the token has no subject"))?;
        let roles = match claims.get("roles") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|r| r.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(AuthError::Invalid("the token roles claim must be a list of strings"))?,
            ),
            Some(_) => return Err(AuthError::Invalid("the token roles claim must be a list of strings")),
        };
        Ok(Principal { user: sub.to_owned(), roles })
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Mints an HS256 token (for `meshguard token`, tests and the README's examples; production
/// tokens come from the identity provider).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> AuthSettings {
        AuthSettings {
            jwt_hs256_secret: "s".repeat(40),
            issuer: "meshguard".into(),
            audience: "datamesh-api".into(),
            api_keys: vec![format!("bob:{}", "00".repeat(32))],
            jwt_public_key_file: String::new(),
            jwks_url: String::new(),
            jwks_timeout_ms: 1000,
            jwks_min_refresh_ms: 0,
        }
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[tokio::test]
    async fn verifies_and_rejects_tokens() {
        let a = Authenticator::from_settings(&settings()).unwrap_or_else(|e| panic!("{e}"));
        let secret = "s".repeat(40);
        let good = json!({"sub": "alice", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 600, "roles": ["x"]});
        let bearer = |t: String| format!("Bearer {t}");
        let mint = |claims: &Value| mint_hs256(secret.as_bytes(), claims).unwrap_or_else(|e| panic!("{e}"));
        let p = a.authenticate(Some(&bearer(mint(&good))), None).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.user, "alice");
        assert_eq!(p.roles, Some(vec!["x".to_owned()]));
        let mut expired = good.clone();
        expired["exp"] = json!(now() - 600);
        assert_eq!(a.authenticate(Some(&bearer(mint(&expired))), None).await.err(), Some(AuthError::Invalid("the token has expired")));
        let forged = mint_hs256(b"another-secret-another-secret-another", &good).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.authenticate(Some(&bearer(forged)), None).await.is_err());
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        assert!(a.authenticate(Some(&bearer(mint(&wrong_aud))), None).await.is_err());
        let mut far = good.clone();
        far["exp"] = json!(i64::MAX);
        assert!(a.authenticate(Some(&bearer(mint(&far))), None).await.is_ok(), "no overflow at the end of time");
        assert_eq!(a.authenticate(None, None).await.err(), Some(AuthError::Missing));
        assert!(a.authenticate(None, Some("nope")).await.is_err());
        let none =
            Authenticator::from_settings(&AuthSettings { jwt_hs256_secret: String::new(), ..settings() }).unwrap_or_else(|e| panic!("{e}"));
        assert!(none.authenticate(Some(&bearer(mint(&good))), None).await.is_err(), "no secret, no HS256");
    }

    #[test]
    fn short_secret_and_bad_keys_are_refused() {
        let mut s = AuthSettings { jwt_hs256_secret: "short".into(), api_keys: vec![], ..settings() };
        assert!(Authenticator::from_settings(&s).is_err());
        s.jwt_hs256_secret.clear();
        s.api_keys = vec!["nocolon".into()];
        assert!(Authenticator::from_settings(&s).is_err());
        let s = AuthSettings { jwks_url: "ftp://x".into(), ..settings() };
        assert!(Authenticator::from_settings(&s).is_err());
    }
}
