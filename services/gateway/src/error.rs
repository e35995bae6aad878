//! The edge's error mapping: every domain error becomes a wire error (a
//! stable code and a sentence) here and nowhere else.

use imlog_domain::accounts::AccountsError;
use imlog_domain::files::transfers::TransfersError;
use imlog_domain::files::FilesError;
use imlog_domain::friends::FriendsError;
use imlog_domain::groups::GroupsError;
use imlog_domain::messages::MessagesError;
use imlog_domain::profiles::ProfilesError;
use imlog_domain::threads::ThreadsError;
use imlog_domain::StoreError;
use imlog_protocol::{ErrorCode, WireError};

/// A wire error on its way out of a handler.
#[derive(Debug, Clone)]
pub struct ApiError(pub WireError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(WireError::new(code, message))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError(WireError::bad_request(message))
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError(e)
    }
}

/// Store failures are logged with their cause; the client learns only
/// whether retrying makes sense.
pub fn store_error(e: &StoreError) -> WireError {
    match e {
        StoreError::Log(log) if log.is_retriable() => {
            tracing::warn!(error = %log, "log append failed");
            WireError::new(
                ErrorCode::Unavailable,
                "the event log is unavailable; retry shortly",
            )
        }
        StoreError::Log(log) => {
            tracing::error!(error = %log, "log refused a write");
            WireError::new(ErrorCode::Internal, "the event log refused the write")
        }
        StoreError::Read(cause) => {
            tracing::warn!(error = %cause, "read model query failed");
            WireError::new(
                ErrorCode::Unavailable,
                "the database is unavailable; retry shortly",
            )
        }
        StoreError::Lagging(_) => WireError::new(
            ErrorCode::ProjectionLagging,
            "the read model has not caught up with your last write yet; retry",
        ),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(store_error(&e))
    }
}

impl From<AccountsError> for ApiError {
    fn from(e: AccountsError) -> Self {
        let code = match &e {
            AccountsError::NameTaken(_) => ErrorCode::NameTaken,
            AccountsError::BadCredentials => ErrorCode::BadCredentials,
            AccountsError::BadToken => ErrorCode::BadToken,
            AccountsError::Busy => {
                return ApiError::new(
                    ErrorCode::Unavailable,
                    "too many logins at once; retry shortly",
                )
            }
            AccountsError::Hashing => ErrorCode::Internal,
            AccountsError::Store(s) => return s.clone().into(),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<ThreadsError> for ApiError {
    fn from(e: ThreadsError) -> Self {
        let code = match &e {
            ThreadsError::WithYourself => ErrorCode::BadRequest,
            ThreadsError::NoSuchUser(_) => ErrorCode::NotFound,
            ThreadsError::NotFriends(_) => ErrorCode::Forbidden,
            ThreadsError::NotMember(_) => ErrorCode::Forbidden,
            ThreadsError::Vanished => ErrorCode::Internal,
            ThreadsError::Store(s) => return s.clone().into(),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<MessagesError> for ApiError {
    fn from(e: MessagesError) -> Self {
        match e {
            MessagesError::Thread(t) => t.into(),
            MessagesError::Muted(_) | MessagesError::NotSender => {
                ApiError::new(ErrorCode::Forbidden, e.to_string())
            }
            MessagesError::NoSuchMessage(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            MessagesError::RecallWindowPassed(_) => {
                ApiError::new(ErrorCode::TooLate, e.to_string())
            }
            MessagesError::Upload(f) => f.into(),
            MessagesError::Store(s) => s.into(),
        }
    }
}

impl From<FriendsError> for ApiError {
    fn from(e: FriendsError) -> Self {
        let code = match &e {
            FriendsError::Yourself => ErrorCode::BadRequest,
            FriendsError::NoSuchUser(_) | FriendsError::NoPendingRequest(_) => ErrorCode::NotFound,
            FriendsError::AlreadyFriends(_) => ErrorCode::Conflict,
            FriendsError::Store(s) => return s.clone().into(),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<GroupsError> for ApiError {
    fn from(e: GroupsError) -> Self {
        let code = match &e {
            GroupsError::NotMember(_) | GroupsError::NotAllowed(_) | GroupsError::OwnerLeaving => {
                ErrorCode::Forbidden
            }
            GroupsError::NoSuchMember(_) | GroupsError::NoSuchUser(_) => ErrorCode::NotFound,
            GroupsError::NotAGroup(_) | GroupsError::TooMany | GroupsError::BadRole => {
                ErrorCode::BadRequest
            }
            GroupsError::Superseded => ErrorCode::Conflict,
            GroupsError::Store(s) => return s.clone().into(),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<ProfilesError> for ApiError {
    fn from(e: ProfilesError) -> Self {
        match e {
            ProfilesError::NoSuchUser(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            ProfilesError::Avatar(ref f) => {
                let code = ApiError::from(f.clone()).code();
                ApiError::new(code, e.to_string())
            }
            ProfilesError::Store(s) => s.into(),
        }
    }
}

impl From<FilesError> for ApiError {
    fn from(e: FilesError) -> Self {
        let code = match &e {
            FilesError::Empty
            | FilesError::NoSuchChunk { .. }
            | FilesError::ChunkSize { .. }
            | FilesError::KindMismatch { .. } => ErrorCode::BadRequest,
            FilesError::TooLarge { .. } | FilesError::TooMuchInFlight { .. } => {
                ErrorCode::QuotaExceeded
            }
            FilesError::NoSuchUpload(_) => ErrorCode::NotFound,
            FilesError::NotYours(_) | FilesError::NotAllowed(_) => ErrorCode::Forbidden,
            FilesError::Ended(..) | FilesError::NotUploaded(_) => ErrorCode::Conflict,
            FilesError::ChunkChecksum { .. } => ErrorCode::BadChecksum,
            FilesError::Objects(cause) => {
                tracing::warn!(error = %cause, "object store request failed");
                return ApiError::new(
                    ErrorCode::Unavailable,
                    "the object store is unavailable; retry shortly",
                );
            }
            FilesError::Store(s) => return s.clone().into(),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<TransfersError> for ApiError {
    fn from(e: TransfersError) -> Self {
        let code = match &e {
            TransfersError::Yourself | TransfersError::WrongMode(..) => ErrorCode::BadRequest,
            TransfersError::NotFriends(_)
            | TransfersError::NotParty(_)
            | TransfersError::WrongRole(_) => ErrorCode::Forbidden,
            TransfersError::NoSuchTask(_) => ErrorCode::NotFound,
            TransfersError::Ended(..) | TransfersError::Started(_) => ErrorCode::Conflict,
            TransfersError::Upload(f) => return f.clone().into(),
            TransfersError::Store(s) => return s.clone().into(),
        };
        ApiError::new(code, e.to_string())
    }
}
