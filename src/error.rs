//! The one error type of the HTTP layer and its mapping to the contract's
//! envelope `{"error": {"code", "message", ...}}` (docs/API.md).
//!
//! Handlers return `Result<_, ApiError>`; infrastructure errors are turned into
//! variants here, in one place: an unreachable database is 503 `unavailable`
//! with `Retry-After`, anything unexpected an opaque 500 whose cause is logged
//! once, never sent to the client.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{json, Value};

/// One problem with one input field, reported in `error.fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the field, e.g. `items[0].quantity`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every 409's `error.code`, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCode {
    IdempotencyKeyReused,
    InvalidState,
    RequestInProgress,
    SkuExists,
    StaffExists,
}

impl ConflictCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictCode::IdempotencyKeyReused => "idempotency_key_reused",
            ConflictCode::InvalidState => "invalid_state",
            ConflictCode::RequestInProgress => "request_in_progress",
            ConflictCode::SkuExists => "sku_exists",
            ConflictCode::StaffExists => "staff_exists",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("invalid Idempotency-Key header")]
    InvalidIdempotencyKey,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("missing, unknown or revoked token")]
    Unauthorized,
    /// The principal's role does not allow it (or a cookie request came
    /// from another origin).
    #[error("{0}")]
    Forbidden(String),
    /// A gateway event whose signature does not verify (or is missing, or
    /// too old).
    #[error("{0}")]
    InvalidSignature(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{1}")]
    Conflict(ConflictCode, String),
    #[error("payment declined")]
    PaymentDeclined {
        decline_code: String,
        message: String,
        order: Value,
    },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::InvalidSignature(_) => "invalid_signature",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(code, _) => code.as_str(),
            ApiError::PaymentDeclined { .. } => "payment_declined",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Unexpected(_) => "internal_error",
        }
    }

    /// The JSON body of this error: the envelope plus its details.
    pub fn body(&self) -> Value {
        let message = match self {
            ApiError::Unexpected(_) => "internal error; it has been logged".to_owned(),
            ApiError::Unavailable(_) => {
                "the service is temporarily unavailable; retry later".to_owned()
            }
            ApiError::Validation(fields) => format!("{} field(s) are invalid", fields.len()),
            ApiError::PaymentDeclined { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        match self {
            ApiError::Validation(fields) => error["fields"] = json!(fields),
            ApiError::PaymentDeclined {
                decline_code,
                order,
                ..
            } => {
                error["decline_code"] = json!(decline_code);
                error["order"] = order.clone();
            }
            _ => {}
        }
        json!({ "error": error })
    }

    pub fn conflict(code: ConflictCode, message: impl Into<String>) -> Self {
        ApiError::Conflict(code, message.into())
    }
}

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 2;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_)
            | ApiError::InvalidIdempotencyKey
            | ApiError::InvalidSignature(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PaymentDeclined { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Unexpected(e) => tracing::error!(error.cause_chain = ?e, "unexpected error"),
            ApiError::Unavailable(why) => tracing::warn!(error.cause = %why, "answering 503"),
            _ => {}
        }
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable(_) => {
                builder.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            ApiError::Unauthorized => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        builder.json(self.body())
    }
}
