//! The constant-time token compares: `OPS_TOKEN` (the gate, the sign-in)
//! and the `/metrics` token. Who a request acts for is `staff::Principal`,
//! found by `staff::gate`.

use actix_web::{http::header, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Digest of a token; comparing digests keeps the compare constant-time
/// whatever the lengths.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The request's `Authorization: Bearer` token, if it has one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request's `Authorization: Bearer` token has `digest`
/// (compared in constant time).
pub fn bearer_matches(req: &HttpRequest, digest: &[u8; 32]) -> bool {
    bearer(req).is_some_and(|presented| matches(presented, digest))
}

/// Whether `presented` has `digest` (compared in constant time).
pub fn matches(presented: &str, digest: &[u8; 32]) -> bool {
    bool::from(token_digest(presented).ct_eq(digest))
}
