//! The ops principal: an extractor that admits a request only with
//! `Authorization: Bearer $OPS_TOKEN` (docs/API.md), compared in constant time.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::ApiError;

/// Proof that the request carries the ops token. Take it as a handler
/// argument to protect the handler.
#[derive(Debug, Clone, Copy)]
pub struct OpsAuth;

/// Digest of a token; comparing digests keeps the compare constant-time
/// whatever the lengths.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn check(req: &HttpRequest) -> Result<OpsAuth, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("AppState missing")))?;
    if bearer_matches(req, &state.ops_token_digest) {
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
        .is_some_and(|presented| bool::from(token_digest(presented).ct_eq(digest)))
}

impl FromRequest for OpsAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req))
    }
}
