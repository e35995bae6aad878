//! The client protocol's frames: wire DTOs parsed into validated requests
//! ("parse, don't validate"), and the reply and push envelopes.
//!
//! Request: `{"req": 7, "op": "send_messages", ...fields}`.
//! Reply:   `{"req": 7, "ok": true, "data": {...}}` or
//!          `{"req": 7, "ok": false, "error": {"code": "...", "message": "..."}}`.
//! Push:    `{"push": "message", "data": {...}}`.

use crate::error::{ApiError, ErrorCode};
use imlog_events::{MessageId, ThreadId, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const MAX_TEXT_CHARS: usize = 1024;
pub const MAX_BATCH_ITEMS: usize = 100;
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_THREAD_PAGE: usize = 100;
pub const DEFAULT_MESSAGE_PAGE: usize = 20;

/// A login name: 3–32 of `a-z 0-9 _ . -`, starting with a letter or digit,
/// compared case-insensitively (stored lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<UserName, ApiError> {
        let name = raw.trim().to_ascii_lowercase();
        let valid = (3..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(UserName(name))
        } else {
            Err(ApiError::bad_request(
                "name must be 3-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 8–256 characters.
#[derive(Clone)]
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String) -> Result<NewPassword, ApiError> {
        let n = raw.chars().count();
        if (8..=256).contains(&n) {
            Ok(NewPassword(raw))
        } else {
            Err(ApiError::bad_request("password must be 8-256 characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One text message to post, validated.
#[derive(Debug, Clone)]
pub struct OutgoingText {
    pub unique_id: String,
    pub body: String,
}

/// A validated request.
pub enum Request {
    Register {
        name: UserName,
        password: NewPassword,
    },
    Login {
        name: UserName,
        password: String,
        device: String,
    },
    Auth {
        token: String,
    },
    Ping,
    Logout,
    OpenPrivateThread {
        user_id: UserId,
    },
    /// Items that failed validation keep their place, so each gets its own answer.
    SendMessages {
        thread_id: ThreadId,
        items: Vec<Result<OutgoingText, (String, ApiError)>>,
        /// The client resends after a lost reply: check for the first send
        /// against everything already appended, not just what is projected.
        retry: bool,
    },
    SyncThreads {
        after: ThreadId,
        limit: usize,
    },
    SyncMessages {
        thread_id: ThreadId,
        since: MessageId,
        limit: usize,
    },
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Login { .. } => "login",
            Request::Auth { .. } => "auth",
            Request::Ping => "ping",
            Request::Logout => "logout",
            Request::OpenPrivateThread { .. } => "open_private_thread",
            Request::SendMessages { .. } => "send_messages",
            Request::SyncThreads { .. } => "sync_threads",
            Request::SyncMessages { .. } => "sync_messages",
        }
    }
}

#[derive(Deserialize)]
struct RegisterWire {
    name: String,
    password: String,
}

#[derive(Deserialize)]
struct LoginWire {
    name: String,
    password: String,
    #[serde(default)]
    device: Option<String>,
}

#[derive(Deserialize)]
struct AuthWire {
    token: String,
}

#[derive(Deserialize)]
struct OpenPrivateThreadWire {
    user_id: i64,
}

#[derive(Deserialize)]
struct SendMessagesWire {
    thread_id: i64,
    items: Vec<ItemWire>,
    #[serde(default)]
    retry: bool,
}

#[derive(Deserialize)]
struct ItemWire {
    unique_id: String,
    body: String,
}

#[derive(Deserialize)]
struct SyncThreadsWire {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct SyncMessagesWire {
    thread_id: i64,
    #[serde(default)]
    since: i64,
    #[serde(default)]
    limit: Option<usize>,
}

fn fields<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A page size: `default` when absent, else 1..=`MAX_PAGE` (also used by the HTTP API).
pub fn page_limit(requested: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match requested {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!("limit must be 1-{MAX_PAGE}"))),
    }
}

fn positive(value: i64, field: &str) -> Result<i64, ApiError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be a positive id"
        )))
    }
}

fn text_item(item: ItemWire) -> Result<OutgoingText, (String, ApiError)> {
    let unique_id_ok =
        (1..=64).contains(&item.unique_id.len()) && !item.unique_id.chars().any(char::is_control);
    if !unique_id_ok {
        return Err((
            item.unique_id,
            ApiError::bad_request("unique_id must be 1-64 bytes without control characters"),
        ));
    }
    let chars = item.body.chars().count();
    if chars == 0 {
        return Err((item.unique_id, ApiError::bad_request("body is empty")));
    }
    // Postgres text cannot hold NUL: a stored event it cannot project would
    // stall the projection for everyone.
    if item.body.contains('\0') {
        return Err((
            item.unique_id,
            ApiError::bad_request("body must not contain NUL characters"),
        ));
    }
    if chars > MAX_TEXT_CHARS {
        return Err((
            item.unique_id,
            ApiError::new(
                ErrorCode::TooLong,
                format!("body has {chars} characters; the limit is {MAX_TEXT_CHARS}"),
            ),
        ));
    }
    Ok(OutgoingText {
        unique_id: item.unique_id,
        body: item.body,
    })
}

/// Parses one text frame. Returns the request id to echo (null if none could
/// be read) and the request or why it is not one.
pub fn parse(text: &str) -> (Value, Result<Request, ApiError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return (
                Value::Null,
                Err(ApiError::new(
                    ErrorCode::BadJson,
                    format!("frame is not JSON: {e}"),
                )),
            )
        }
    };
    let Some(object) = value.as_object() else {
        return (
            Value::Null,
            Err(ApiError::bad_request("a request is a JSON object")),
        );
    };
    let req = match object.get("req") {
        None => Value::Null,
        Some(r @ (Value::Number(_) | Value::String(_))) => r.clone(),
        Some(_) => {
            return (
                Value::Null,
                Err(ApiError::bad_request("req must be a number or a string")),
            )
        }
    };
    let op = match object.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => return (req, Err(ApiError::bad_request("op must be a string"))),
        None => return (req, Err(ApiError::bad_request("missing field `op`"))),
    };
    let request = parse_op(&op, value);
    (req, request)
}

fn parse_op(op: &str, value: Value) -> Result<Request, ApiError> {
    Ok(match op {
        "register" => {
            let w: RegisterWire = fields(value)?;
            Request::Register {
                name: UserName::parse(&w.name)?,
                password: NewPassword::parse(w.password)?,
            }
        }
        "login" => {
            let w: LoginWire = fields(value)?;
            let device = w.device.unwrap_or_else(|| "unknown".into());
            if device.chars().count() > 64 || device.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "device must be at most 64 characters, without control characters",
                ));
            }
            Request::Login {
                name: UserName::parse(&w.name)?,
                password: w.password,
                device,
            }
        }
        "auth" => Request::Auth {
            token: fields::<AuthWire>(value)?.token,
        },
        "ping" => Request::Ping,
        "logout" => Request::Logout,
        "open_private_thread" => {
            let w: OpenPrivateThreadWire = fields(value)?;
            Request::OpenPrivateThread {
                user_id: UserId(positive(w.user_id, "user_id")?),
            }
        }
        "send_messages" => {
            let w: SendMessagesWire = fields(value)?;
            if w.items.is_empty() || w.items.len() > MAX_BATCH_ITEMS {
                return Err(ApiError::bad_request(format!(
                    "items must hold 1-{MAX_BATCH_ITEMS} messages"
                )));
            }
            Request::SendMessages {
                thread_id: ThreadId(positive(w.thread_id, "thread_id")?),
                items: w.items.into_iter().map(text_item).collect(),
                retry: w.retry,
            }
        }
        "sync_threads" => {
            let w: SyncThreadsWire = fields(value)?;
            Request::SyncThreads {
                after: ThreadId(w.after.max(0)),
                limit: page_limit(w.limit, DEFAULT_THREAD_PAGE)?,
            }
        }
        "sync_messages" => {
            let w: SyncMessagesWire = fields(value)?;
            Request::SyncMessages {
                thread_id: ThreadId(positive(w.thread_id, "thread_id")?),
                since: MessageId(w.since.max(0)),
                limit: page_limit(w.limit, DEFAULT_MESSAGE_PAGE)?,
            }
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::UnknownOp,
                format!("unknown op {:?}", truncate(other, 64)),
            ))
        }
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn ok_reply(req: &Value, data: impl Serialize) -> String {
    json!({ "req": req, "ok": true, "data": data }).to_string()
}

pub fn error_reply(req: &Value, error: &ApiError) -> String {
    json!({ "req": req, "ok": false, "error": { "code": error.code, "message": error.message } })
        .to_string()
}

pub fn push(kind: &str, data: impl Serialize) -> String {
    json!({ "push": kind, "data": data }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        match parse(text).1 {
            Ok(r) => panic!("{text} parsed as {}", r.op()),
            Err(e) => e.code,
        }
    }

    #[test]
    fn malformed_frames_get_stable_codes() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"req":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"req":1,"op":"fly"}"#), ErrorCode::UnknownOp);
        assert_eq!(
            code(r#"{"req":1,"op":"send_messages","thread_id":"x","items":[]}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"req":1,"op":"open_private_thread"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"req":1,"op":"open_private_thread","user_id":-3}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"req":1,"op":"register","name":"../etc","password":"12345678"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"req":1,"op":"sync_messages","thread_id":1,"limit":1000}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn req_is_echoed_even_when_the_request_is_bad() {
        let (req, result) = parse(r#"{"req":"abc","op":"fly"}"#);
        assert_eq!(req, json!("abc"));
        assert!(result.is_err());
    }

    #[test]
    fn over_long_items_are_refused_one_by_one() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let frame = json!({"req":1,"op":"send_messages","thread_id":5,
            "items":[{"unique_id":"a","body":"hi"},{"unique_id":"b","body":long}]});
        let Ok(Request::SendMessages { items, .. }) = parse(&frame.to_string()).1 else {
            panic!("should parse")
        };
        assert!(items[0].is_ok());
        assert_eq!(items[1].as_ref().unwrap_err().1.code, ErrorCode::TooLong);
    }

    #[test]
    fn nul_characters_never_reach_the_log() {
        let frame = json!({"req":1,"op":"send_messages","thread_id":5,
            "items":[{"unique_id":"a","body":"a\u{0}b"},{"unique_id":"b\u{0}","body":"x"}]});
        let Ok(Request::SendMessages { items, .. }) = parse(&frame.to_string()).1 else {
            panic!("should parse")
        };
        assert!(items.iter().all(|i| i.is_err()));
        let login =
            json!({"req":2,"op":"login","name":"alice","password":"x","device":"ph\u{0}ne"});
        assert_eq!(code(&login.to_string()), ErrorCode::BadRequest);
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(UserName::parse(" Alice ").unwrap().as_str(), "alice");
        assert!(UserName::parse("al").is_err());
        assert!(UserName::parse("a/b/c").is_err());
    }
}
