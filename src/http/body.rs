//! Reading a JSON object body with the contract's errors: 415 for a wrong
//! Content-Type, 413 over the limit, 400 for bytes that are not a JSON object.

use actix_web::{http::header, web, HttpRequest};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Largest accepted request body (docs/API.md).
pub const BODY_LIMIT: usize = 64 * 1024;

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads the body as a JSON object of at most `limit` bytes.
pub async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = bytes(req, payload, limit).await?;
    object_of(&body)
}

/// Reads the raw body, at most `limit` bytes (413 past it, read no further).
pub async fn bytes(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Malformed(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn object_of(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => {
            let mut fields = Vec::new();
            // JSON can only carry a NUL escaped, so a body without the
            // escape needs no walk (the purchase path's common case).
            if body.windows(6).any(|w| w == b"\\u0000") {
                nul_strings(&value, "", &mut fields);
            }
            match value {
                Value::Object(map) if fields.is_empty() => Ok(map),
                _ => Err(ApiError::Validation(fields)),
            }
        }
        Ok(_) => Err(ApiError::Malformed(
            "the top level of the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::Malformed(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// Message for a string PostgreSQL cannot store.
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Every string (value or key) holding a NUL, which no text column can
/// store: reported as a field error instead of failing in the database.
fn nul_strings(v: &Value, path: &str, out: &mut Vec<crate::error::FieldError>) {
    let field = |p: &str| {
        if p.is_empty() {
            "body".to_owned()
        } else {
            p.to_owned()
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => {
            out.push(crate::error::FieldError::new(field(path), NUL_MESSAGE))
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                nul_strings(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.contains('\0') {
                    out.push(crate::error::FieldError::new(field(path), NUL_MESSAGE));
                }
                nul_strings(x, &here, out);
            }
        }
        _ => {}
    }
}

/// Writes `v` with object keys sorted, so two bodies that differ only in key
/// order or whitespace get the same fingerprint.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => canonical_object(m, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 of the canonical JSON, hex.
fn canonical_object(m: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A JSON string literal: serde_json escapes it for us.
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        canonical(&m[k], out);
    }
    out.push('}');
}

pub fn fingerprint(body: &Map<String, Value>) -> String {
    use sha2::Digest;
    let mut s = String::new();
    canonical_object(body, &mut s);
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": null}});
        let b: Value = serde_json::from_str(r#"{ "a": {"x": null, "y": [1,2]}, "b": 1 }"#).unwrap();
        let c = json!({"b": 1, "a": {"y": [2, 1], "x": null}});
        let fp = |v: &Value| fingerprint(v.as_object().unwrap());
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c));
    }
}
