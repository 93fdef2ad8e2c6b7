//! Proof, for an ops handler, that the staff gate admitted its request
//! (`staff::gate` finds the principal and checks its role before any
//! handler runs), and the constant-time bearer compare the gate and
//! `/metrics` use.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Proof that the gate found a principal for the request. Take it as a
/// handler argument: a route the gate let through without one (a rule
/// gone missing) is then refused, not served.
#[derive(Debug, Clone, Copy)]
pub struct OpsAuth;

/// Digest of a token; comparing digests keeps the compare constant-time
/// whatever the lengths.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn check(req: &HttpRequest) -> Result<OpsAuth, ApiError> {
    use actix_web::HttpMessage as _;
    if req.extensions().get::<crate::staff::Principal>().is_some() {
        Ok(OpsAuth)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether the request's `Authorization: Bearer` token has `digest`
/// (compared in constant time).
pub fn bearer_matches(req: &HttpRequest, digest: &[u8; 32]) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .is_some_and(|presented| matches(presented, digest))
}

/// Whether `presented` has `digest` (compared in constant time).
pub fn matches(presented: &str, digest: &[u8; 32]) -> bool {
    bool::from(token_digest(presented).ct_eq(digest))
}

impl FromRequest for OpsAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req))
    }
}
