//! Authentication: HS256 bearer JWTs (signature, `exp`, `nbf`, `iss`, `aud`, `sub`) and API keys
//! stored as SHA-256 hashes. Nothing here logs a secret or a token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;
/// Smallest accepted HS256 secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

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

/// The configured verifiers.
#[derive(Clone)]
pub struct Authenticator {
    secret: Option<Vec<u8>>,
    issuer: String,
    audience: String,
    /// `(user, sha256 of the key)`.
    keys: Vec<(String, [u8; 32])>,
    /// `--insecure-dev`: every request is this principal.
    dev: Option<Principal>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.secret.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("api_keys", &self.keys.len())
            .field("insecure_dev", &self.dev.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifiers; an error names the bad setting (never its value).
    pub fn from_settings(auth: &AuthSettings) -> Result<Self, String> {
        let secret = if auth.jwt_hs256_secret.is_empty() {
            None
        } else if auth.jwt_hs256_secret.len() < MIN_SECRET_BYTES {
            return Err(format!("auth.jwt_hs256_secret must be at least {MIN_SECRET_BYTES} bytes"));
        } else {
            Some(auth.jwt_hs256_secret.as_bytes().to_vec())
        };
        let mut keys = Vec::with_capacity(auth.api_keys.len());
        for (i, entry) in auth.api_keys.iter().enumerate() {
            let Some((user, hex)) = entry.split_once(':') else {
                return Err(format!("auth.api_keys[{i}] must be \"user_id:sha256hex\""));
            };
            let hash = decode_hex32(hex).ok_or_else(|| format!("auth.api_keys[{i}]: the hash must be 64 hex digits (SHA-256)"))?;
            if user.is_empty() {
                return Err(format!("auth.api_keys[{i}]: the user id is empty"));
            }
            keys.push((user.to_owned(), hash));
        }
        Ok(Self { secret, issuer: auth.issuer.clone(), audience: auth.audience.clone(), keys, dev: None })
    }

    /// Whether any credential is configured.
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || !self.keys.is_empty()
    }

    /// Development mode: every request is user `dev` with `role` (if any).
    pub fn insecure_dev(mut self, role: Option<String>) -> Self {
        self.dev = Some(Principal { user: "dev".into(), roles: Some(role.into_iter().collect()) });
        self
    }

    /// Authenticates from the `Authorization` and `X-Api-Key` header values.
    pub fn authenticate(&self, authorization: Option<&str>, api_key: Option<&str>, now_secs: i64) -> Result<Principal, AuthError> {
        if let Some(dev) = &self.dev {
            return Ok(dev.clone());
        }
        if let Some(value) = authorization {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(AuthError::Invalid("the Authorization header is not a Bearer token"))?;
            let secret = self.secret.as_deref().ok_or(AuthError::Invalid("bearer tokens are not accepted by this server"))?;
            return self.verify_jwt(secret, token.trim(), now_secs);
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

    fn verify_jwt(&self, secret: &[u8], token: &str, now: i64) -> Result<Principal, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Invalid("the token is not a JWS compact serialization"));
        };
        let header: Value = decode_json(h).ok_or(AuthError::Invalid("the token header is not base64url JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(AuthError::Invalid("the token algorithm is not HS256"));
        }
        // RFC 7515 §4.1.11: a `crit` extension the recipient does not understand makes the token
        // invalid, and this server understands none.
        if header.get("crit").is_some() {
            return Err(AuthError::Invalid("the token header names critical extensions this server does not support"));
        }
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Invalid("the token signature is not base64url"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::Invalid("bad secret"))?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&signature).map_err(|_| AuthError::Invalid("the token signature does not verify"))?;
        let claims: Value = decode_json(p).ok_or(AuthError::Invalid("the token claims are not base64url JSON"))?;
        let exp = claims.get("exp").and_then(numeric_date).ok_or(AuthError::Invalid("the token has no numeric exp claim"))?;
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Invalid("the token has expired"));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(AuthError::Invalid("the token nbf claim is not numeric"))?;
            if now.saturating_add(LEEWAY_SECS) < nbf {
                return Err(AuthError::Invalid("the token is not valid yet"));
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(AuthError::Invalid("the token issuer is not accepted"));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == &self.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::Invalid("the token audience is not accepted"));
        }
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

/// An RFC 7519 NumericDate: seconds, possibly with a fraction.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
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

/// Mints an HS256 token (for tests, demos and `README` examples).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> Result<String, String> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|e| e.to_string())?);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{header}.{payload}.{sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth() -> Authenticator {
        let settings = AuthSettings {
            jwt_hs256_secret: "s".repeat(40),
            issuer: "meshguard".into(),
            audience: "datamesh-api".into(),
            api_keys: vec![format!("bob:{}", "00".repeat(32))],
        };
        Authenticator::from_settings(&settings).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn verifies_and_rejects_tokens() {
        let a = auth();
        let secret = "s".repeat(40);
        let good = json!({"sub": "alice", "iss": "meshguard", "aud": "datamesh-api", "exp": 2000, "roles": ["x"]});
        let t = mint_hs256(secret.as_bytes(), &good).unwrap_or_else(|e| panic!("{e}"));
        let p = a.authenticate(Some(&format!("Bearer {t}")), None, 1000).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.user, "alice");
        assert_eq!(p.roles, Some(vec!["x".to_owned()]));
        assert!(a.authenticate(Some(&format!("Bearer {t}")), None, 3000).is_err());
        let forged = mint_hs256(b"another-secret-another-secret-another", &good).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.authenticate(Some(&format!("Bearer {forged}")), None, 1000).is_err());
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        let t = mint_hs256(secret.as_bytes(), &wrong_aud).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.authenticate(Some(&format!("Bearer {t}")), None, 1000).is_err());
        assert_eq!(a.authenticate(None, None, 1000).err(), Some(AuthError::Missing));
        assert!(a.authenticate(None, Some("nope"), 1000).is_err());
    }

    #[test]
    fn short_secret_and_bad_keys_are_refused() {
        let mut s = AuthSettings { jwt_hs256_secret: "short".into(), issuer: "i".into(), audience: "a".into(), api_keys: vec![] };
        assert!(Authenticator::from_settings(&s).is_err());
        s.jwt_hs256_secret.clear();
        s.api_keys = vec!["nocolon".into()];
        assert!(Authenticator::from_settings(&s).is_err());
    }
}
