//! The errors a client can see: a stable code and a human sentence.

use serde::{Deserialize, Serialize};

/// Stable error codes of the client protocol (docs/PROTOCOL.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The request contradicts the current state (e.g. already friends).
    Conflict,
    /// A message is longer than the limit.
    TooLong,
    /// The time allowed for it has passed (recalling a message).
    TooLate,
    /// Bytes did not match the SHA-256 sent with them (a chunk, or a whole
    /// upload); nothing was stored.
    BadChecksum,
    /// A file larger than the server accepts, or more bytes in flight than
    /// a user may have.
    QuotaExceeded,
    /// Too many password checks (`register`, `login`) from your address;
    /// retry later.
    RateLimited,
    /// The log or the database is unreachable, or the server is busy; retry later.
    Unavailable,
    /// The read model has not caught up with this connection's writes in time; retry.
    ProjectionLagging,
    /// A bug on our side; the server's log has the details.
    Internal,
    /// A code this build of the client does not know (a newer server).
    #[serde(other)]
    Unknown,
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
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLong => "too_long",
            ErrorCode::TooLate => "too_late",
            ErrorCode::BadChecksum => "bad_checksum",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ProjectionLagging => "projection_lagging",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// An error as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        WireError::new(ErrorCode::BadRequest, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_wire_names() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::ProjectionLagging,
            ErrorCode::NameTaken,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let later: ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(later, ErrorCode::Unknown);
    }
}
