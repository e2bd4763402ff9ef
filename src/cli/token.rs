//! `meshguard token`: mint a short-lived HS256 token with the configured secret, for operators
//! and the README's curl examples (production tokens come from the identity provider).

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::{ConfigArg, fail};

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user (the token's subject).
    #[arg(long, value_name = "USER")]
    pub sub: String,
    /// A role carried in the token's `roles` claim (repeatable). Without any, the API looks the
    /// user's roles up in MongoDB `users`.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: i64,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub(super) fn run(args: TokenArgs) -> ExitCode {
    let (settings, _) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let secret = settings.auth.jwt_hs256_secret.as_bytes();
    if secret.is_empty() {
        return fail("auth.jwt_hs256_secret is not set (MESHGUARD__AUTH__JWT_HS256_SECRET)");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({
        "sub": args.sub,
        "iss": settings.auth.issuer,
        "aud": settings.auth.audience,
        "iat": now,
        "exp": now + args.ttl.max(1),
    });
    if !args.roles.is_empty() {
        claims["roles"] = json!(args.roles);
    }
    match crate::api::auth::mint_hs256(secret, &claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
