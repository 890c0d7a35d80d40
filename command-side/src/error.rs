//! The one error type of the write API, mapped to HTTP once.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::event_store::EventStoreError;

/// Which credentials a 401 asks for, so the `WWW-Authenticate` header names the right scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic with `system_key:secret` (systems and gateways).
    Basic,
    /// A bearer token (administrator or tenant).
    Bearer,
}

/// Everything a command can fail with; each variant documents its status. Nothing is appended
/// when a command fails.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// 400: the request is malformed (syntax, a bad timestamp, an out-of-range value).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_json`.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// 422: well-formed JSON that does not have the shape the endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    /// 401: no credentials, or wrong ones. The same answer for a wrong key and a wrong secret.
    #[error("missing or invalid credentials")]
    Unauthorized(Challenge),
    /// 403: the credentials are right but may not do this (a paused system, a gateway calling a
    /// system endpoint).
    #[error("{message}")]
    Forbidden {
        /// Machine-readable code, e.g. `system_paused`.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 404: the thing the command is about does not exist (in the caller's tenant).
    #[error("{0}")]
    NotFound(String),
    /// 409: the command conflicts with what is stored (a name taken, an id reused).
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// 413: the body is larger than API_MAX_REQUEST_SIZE.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415: the body's content type is not one the endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many failed authentications for this key; retry after the given seconds.
    #[error("too many failed attempts for this key; retry in {retry_after_s} s")]
    TooManyFailures {
        /// Seconds until the key may try again.
        retry_after_s: u64,
    },
    /// 503: the event store is shutting down or unreachable; the command may be retried as is.
    #[error("the event store is unavailable; retry later")]
    Unavailable,
    /// 500: a failure on our side; details go to the log, not to the client.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The result type of command handlers.
pub type Result<T, E = CommandError> = std::result::Result<T, E>;

impl CommandError {
    /// A 400 with a code and a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 403 with a code and a message.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// A 409 with a code and a message.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// A 500 from any error.
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    /// The status and machine-readable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::TooManyFailures { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_failures"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(source) = &self {
            tracing::error!(error = %source, "command failed");
        }
        metrics::counter!("fleetlog_command_errors_total", "code" => code).increment(1);
        let body = json!({"error": {"code": code, "message": self.to_string()}});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized(Challenge::Basic) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"fleetlog\""),
                );
            }
            Self::Unauthorized(Challenge::Bearer) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyFailures { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            _ => {}
        }
        response
    }
}

impl From<EventStoreError> for CommandError {
    fn from(error: EventStoreError) -> Self {
        match error {
            EventStoreError::WrongExpectedVersion { .. } => {
                Self::conflict("wrong_expected_version", error.to_string())
            }
            EventStoreError::EventIdReused { .. } => {
                Self::conflict("idempotency_key_reused", error.to_string())
            }
            EventStoreError::InvalidAppend(message) => Self::bad_request("invalid_append", message),
            EventStoreError::Rejected(message) => {
                Self::InvalidBody(format!("the event store refused the content: {message}"))
            }
            EventStoreError::Unavailable => Self::Unavailable,
            other => Self::internal(other),
        }
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

impl From<QueryRejection> for CommandError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for CommandError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, stable across releases (`invalid_json`, `system_paused`, ...).
    pub code: String,
    /// What to fix, for people.
    pub message: String,
}
