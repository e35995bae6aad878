//! Parsed values: each type can only hold a valid value, so code that
//! receives one need not check it again. They (de)serialise as plain strings;
//! deserialising parses.

use crate::{ErrorCode, WireError};
use imlog_events::UserId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const MAX_TEXT_CHARS: usize = 1024;
pub const MAX_BATCH_ITEMS: usize = 100;
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_THREAD_PAGE: usize = 100;
pub const DEFAULT_MESSAGE_PAGE: usize = 20;

/// String newtypes: `as_str`, string serde through `parse`.
macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(raw).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    };
}
pub(crate) use string_value;

/// Postgres text cannot hold NUL: an event it cannot project would stall
/// the projection for everyone, so no client string may carry one.
fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// A login name: 3–32 of `a-z 0-9 _ . -`, starting with a letter or digit,
/// compared case-insensitively (stored lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);
string_value!(UserName);

impl UserName {
    pub fn parse(raw: impl AsRef<str>) -> Result<UserName, WireError> {
        let name = raw.as_ref().trim().to_ascii_lowercase();
        let valid = (3..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(UserName(name))
        } else {
            Err(WireError::bad_request(
                "name must be 3-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
            ))
        }
    }
}

/// A new password: 8–256 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);
string_value!(NewPassword);

impl NewPassword {
    pub fn parse(raw: impl Into<String>) -> Result<NewPassword, WireError> {
        let raw = raw.into();
        if (8..=256).contains(&raw.chars().count()) {
            Ok(NewPassword(raw))
        } else {
            Err(WireError::bad_request("password must be 8-256 characters"))
        }
    }
}

/// A password offered at login: any string up to 256 characters (a longer
/// one cannot be right, and would only cost hashing time).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);
string_value!(Password);

impl Password {
    pub fn parse(raw: impl Into<String>) -> Result<Password, WireError> {
        let raw = raw.into();
        if raw.chars().count() <= 256 {
            Ok(Password(raw))
        } else {
            Err(WireError::bad_request(
                "password must be at most 256 characters",
            ))
        }
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The name a client gives its device: at most 64 characters, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device(String);
string_value!(Device);

impl Device {
    pub fn parse(raw: impl Into<String>) -> Result<Device, WireError> {
        let raw = raw.into();
        if raw.chars().count() <= 64 && !raw.chars().any(char::is_control) {
            Ok(Device(raw))
        } else {
            Err(WireError::bad_request(
                "device must be at most 64 characters, without control characters",
            ))
        }
    }

    pub fn unknown() -> Device {
        Device("unknown".into())
    }
}

/// A client-generated message id: 1–64 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueId(String);
string_value!(UniqueId);

impl UniqueId {
    pub fn parse(raw: impl Into<String>) -> Result<UniqueId, WireError> {
        let raw = raw.into();
        if (1..=64).contains(&raw.len()) && !raw.chars().any(char::is_control) {
            Ok(UniqueId(raw))
        } else {
            Err(WireError::bad_request(
                "unique_id must be 1-64 bytes without control characters",
            ))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A text message body: 1–`MAX_TEXT_CHARS` characters, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);
string_value!(MessageBody);

impl MessageBody {
    pub fn parse(raw: impl Into<String>) -> Result<MessageBody, WireError> {
        let raw = raw.into();
        let chars = raw.chars().count();
        if chars == 0 {
            return Err(WireError::bad_request("body is empty"));
        }
        if has_nul(&raw) {
            return Err(WireError::bad_request(
                "body must not contain NUL characters",
            ));
        }
        if chars > MAX_TEXT_CHARS {
            return Err(WireError::new(
                ErrorCode::TooLong,
                format!("body has {chars} characters; the limit is {MAX_TEXT_CHARS}"),
            ));
        }
        Ok(MessageBody(raw))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A friend request's greeting: up to 256 characters, no NUL; may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greeting(String);
string_value!(Greeting);

impl Greeting {
    pub fn parse(raw: impl Into<String>) -> Result<Greeting, WireError> {
        let raw = raw.into();
        if raw.chars().count() <= 256 && !has_nul(&raw) {
            Ok(Greeting(raw))
        } else {
            Err(WireError::bad_request(
                "greeting must be at most 256 characters, without NUL",
            ))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// What a user calls a friend: up to 64 characters, no control characters;
/// may be empty (then the friend's name shows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alias(String);
string_value!(Alias);

impl Alias {
    pub fn parse(raw: impl Into<String>) -> Result<Alias, WireError> {
        let raw = raw.into();
        if raw.chars().count() <= 64 && !raw.chars().any(char::is_control) {
            Ok(Alias(raw))
        } else {
            Err(WireError::bad_request(
                "alias must be at most 64 characters, without control characters",
            ))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A group's name: 1–64 characters, no control characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName(String);
string_value!(GroupName);

impl GroupName {
    pub fn parse(raw: impl Into<String>) -> Result<GroupName, WireError> {
        let raw = raw.into();
        let n = raw.chars().count();
        if (1..=64).contains(&n) && !raw.trim().is_empty() && !raw.chars().any(char::is_control) {
            Ok(GroupName(raw))
        } else {
            Err(WireError::bad_request(
                "a group name is 1-64 characters, not blank, without control characters",
            ))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A nickname: up to 32 characters, no control characters (empty: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nick(String);
string_value!(Nick);

impl Nick {
    pub fn parse(raw: impl Into<String>) -> Result<Nick, WireError> {
        let raw = raw.into();
        if raw.chars().count() <= 32 && !raw.chars().any(char::is_control) {
            Ok(Nick(raw))
        } else {
            Err(WireError::bad_request(
                "nick must be at most 32 characters, without control characters",
            ))
        }
    }
}

/// A profile's description: up to 256 characters, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);
string_value!(Description);

impl Description {
    pub fn parse(raw: impl Into<String>) -> Result<Description, WireError> {
        let raw = raw.into();
        if raw.chars().count() <= 256 && !has_nul(&raw) {
            Ok(Description(raw))
        } else {
            Err(WireError::bad_request(
                "description must be at most 256 characters, without NUL",
            ))
        }
    }
}

/// An avatar: the id (a UUID) of a completed image upload of your own;
/// empty removes the avatar. Download it from
/// `GET /v1/uploads/{id}/content` (anyone logged in may read a current
/// avatar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarRef(String);
string_value!(AvatarRef);

impl AvatarRef {
    pub fn parse(raw: impl Into<String>) -> Result<AvatarRef, WireError> {
        let raw = raw.into();
        if raw.is_empty() {
            return Ok(AvatarRef(raw));
        }
        match imlog_events::UploadId::parse(&raw) {
            Some(id) => Ok(AvatarRef(id.to_string())),
            None => Err(WireError::bad_request(
                "avatar must be the upload_id of one of your image uploads, or empty",
            )),
        }
    }

    /// The upload it names; `None` removes the avatar.
    pub fn upload_id(&self) -> Option<imlog_events::UploadId> {
        imlog_events::UploadId::parse(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What to search users by: 1–32 characters; digits only is a user id,
/// anything else a name prefix (compared lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(String);
string_value!(SearchQuery);

impl SearchQuery {
    pub fn parse(raw: impl Into<String>) -> Result<SearchQuery, WireError> {
        let raw = raw.into().trim().to_ascii_lowercase();
        let n = raw.chars().count();
        if (1..=32).contains(&n) && !raw.chars().any(char::is_control) {
            Ok(SearchQuery(raw))
        } else {
            Err(WireError::bad_request("query must be 1-32 characters"))
        }
    }

    /// The user id, when the query is one.
    pub fn as_id(&self) -> Option<UserId> {
        if self.0.bytes().all(|b| b.is_ascii_digit()) {
            self.0.parse().ok().and_then(UserId::parse)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(UserName::parse(" Alice ").unwrap().as_str(), "alice");
        assert!(UserName::parse("al").is_err());
        assert!(UserName::parse("a/b/c").is_err());
        assert!(UserName::parse("../etc").is_err());
    }

    #[test]
    fn bodies_refuse_nul_empty_and_over_long() {
        assert!(MessageBody::parse("a\0b").is_err());
        assert!(MessageBody::parse("").is_err());
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(
            MessageBody::parse(long).unwrap_err().code,
            ErrorCode::TooLong
        );
        assert!(MessageBody::parse("x".repeat(MAX_TEXT_CHARS)).is_ok());
    }

    #[test]
    fn values_deserialise_by_parsing() {
        assert!(serde_json::from_str::<UserName>("\"ok_name\"").is_ok());
        assert!(serde_json::from_str::<UserName>("\"no\"").is_err());
        assert!(serde_json::from_str::<Device>("\"ph\\u0000ne\"").is_err());
        assert!(serde_json::from_str::<UniqueId>("\"b\\u0000\"").is_err());
    }
}
