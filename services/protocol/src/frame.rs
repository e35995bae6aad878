//! Frames: parsing a request frame, writing replies, and the reply form a
//! client reads back.

use crate::{ErrorCode, Request, WireError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Parses one text frame. Returns the request id to echo (null if none could
/// be read) and the request or why it is not one.
pub fn parse(text: &str) -> (Value, Result<Request, WireError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return (
                Value::Null,
                Err(WireError::new(
                    ErrorCode::BadJson,
                    format!("frame is not JSON: {e}"),
                )),
            )
        }
    };
    let Some(object) = value.as_object() else {
        return (
            Value::Null,
            Err(WireError::bad_request("a request is a JSON object")),
        );
    };
    let req = match object.get("req") {
        None => Value::Null,
        Some(r @ (Value::Number(_) | Value::String(_))) => r.clone(),
        Some(_) => {
            return (
                Value::Null,
                Err(WireError::bad_request("req must be a number or a string")),
            )
        }
    };
    let op = match object.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => return (req, Err(WireError::bad_request("op must be a string"))),
        None => return (req, Err(WireError::bad_request("missing field `op`"))),
    };
    let request = serde_json::from_value::<Request>(value)
        .map_err(|e| {
            // serde names an unknown tag "unknown variant `<op>`".
            if e.to_string()
                .starts_with(&format!("unknown variant `{op}`"))
            {
                WireError::new(
                    ErrorCode::UnknownOp,
                    format!("unknown op {:?}", truncate(&op, 64)),
                )
            } else {
                WireError::bad_request(e.to_string())
            }
        })
        .and_then(Request::checked);
    (req, request)
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

pub fn error_reply(req: &Value, error: &WireError) -> String {
    json!({ "req": req, "ok": false, "error": error }).to_string()
}

/// A reply as a client reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub req: Value,
    pub ok: bool,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub error: Option<WireError>,
}

impl Reply {
    /// The data, or the server's error.
    pub fn into_result(self) -> Result<Value, WireError> {
        if self.ok {
            Ok(self.data)
        } else {
            Err(self.error.unwrap_or_else(|| {
                WireError::new(ErrorCode::Unknown, "an error reply without an error")
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_TEXT_CHARS;

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
            code(r#"{"req":1,"op":"send_messages","thread_id":3,"items":[]}"#),
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
        let login =
            json!({"req":2,"op":"login","name":"alice","password":"x","device":"ph\u{0}ne"});
        assert_eq!(code(&login.to_string()), ErrorCode::BadRequest);
    }

    #[test]
    fn req_is_echoed_even_when_the_request_is_bad() {
        let (req, result) = parse(r#"{"req":"abc","op":"fly"}"#);
        assert_eq!(req, json!("abc"));
        assert!(result.is_err());
    }

    #[test]
    fn over_long_and_nul_items_are_refused_one_by_one() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let frame = json!({"req":1,"op":"send_messages","thread_id":5,
            "items":[{"unique_id":"a","body":"hi"},{"unique_id":"b","body":long},
                     {"unique_id":"c","body":"a\u{0}b"},{"unique_id":"d\u{0}","body":"x"}]});
        let Ok(Request::SendMessages { items, .. }) = parse(&frame.to_string()).1 else {
            panic!("should parse")
        };
        let parsed: Vec<_> = items.into_iter().map(|i| i.parse()).collect();
        assert!(parsed[0].is_ok());
        assert_eq!(parsed[1].as_ref().unwrap_err().1.code, ErrorCode::TooLong);
        assert!(parsed[2].is_err() && parsed[3].is_err());
    }

    #[test]
    fn cursors_default_to_the_start_and_requests_round_trip() {
        let Ok(request) = parse(r#"{"req":1,"op":"sync_threads"}"#).1 else {
            panic!("should parse")
        };
        assert_eq!(
            request,
            Request::SyncThreads {
                after: crate::Cursor::default(),
                limit: None
            }
        );
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(parse(&text).1.unwrap(), request);
        assert_eq!(parse(r#"{"op":"ping"}"#).1.unwrap().op(), "ping");
    }
}
