//! The errors a client can see: a stable code and a human sentence.

/// Stable error codes of the client protocol (docs/PROTOCOL.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not JSON.
    BadJson,
    /// A field is missing, has the wrong type or an invalid value.
    BadRequest,
    /// The `op` is not one this server knows.
    UnknownOp,
    /// The frame is larger than the server accepts.
    PayloadTooLarge,
    /// The request needs a logged-in connection.
    Unauthenticated,
    /// Wrong name or password.
    BadCredentials,
    /// The token is unknown, expired or its session ended.
    BadToken,
    /// The user name is already registered.
    NameTaken,
    /// The user or thread does not exist.
    NotFound,
    /// Authenticated, but not allowed (e.g. not a member of the thread).
    Forbidden,
    /// A message is longer than the limit.
    TooLong,
    /// The log or the database is unreachable; retry later.
    Unavailable,
    /// The read model has not caught up with this connection's writes in time; retry.
    ProjectionLagging,
    /// A bug on our side; the log has the details.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLong => "too_long",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ProjectionLagging => "projection_lagging",
            ErrorCode::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
    }
}

impl From<imlog_log::LogError> for ApiError {
    fn from(e: imlog_log::LogError) -> Self {
        tracing::warn!(error = %e, "log append failed");
        if e.is_retriable() {
            ApiError::new(
                ErrorCode::Unavailable,
                "the event log is unavailable; retry shortly",
            )
        } else {
            ApiError::new(ErrorCode::Internal, "the event log refused the write")
        }
    }
}

impl From<imlog_projections::ProjectionError> for ApiError {
    fn from(e: imlog_projections::ProjectionError) -> Self {
        tracing::warn!(error = %e, "read model query failed");
        ApiError::new(
            ErrorCode::Unavailable,
            "the database is unavailable; retry shortly",
        )
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection");
        ApiError::new(
            ErrorCode::Unavailable,
            "the database is unavailable; retry shortly",
        )
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
