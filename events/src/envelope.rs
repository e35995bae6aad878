//! The envelope every event travels in, and its JSON encoding.

use crate::registry::{current_version, Event, FromDataError};
use crate::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who, when and why, common to every event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The user whose request caused the event, if any.
    pub actor: Option<UserId>,
    /// Shared by every event that one client request caused.
    pub correlation_id: Uuid,
    /// The event (or request) that directly caused this one.
    pub causation_id: Option<Uuid>,
}

impl EventMeta {
    /// Metadata for an event caused directly by a client request.
    pub fn new(actor: Option<UserId>, correlation_id: Uuid) -> Self {
        EventMeta {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            actor,
            correlation_id,
            causation_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub meta: EventMeta,
    pub event: Event,
}

/// The JSON form of an envelope. `data` is decoded only after upcasting.
#[derive(Serialize, Deserialize)]
struct Wire {
    event_id: Uuid,
    #[serde(rename = "type")]
    type_name: String,
    schema_version: u32,
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    actor: Option<UserId>,
    correlation_id: Uuid,
    #[serde(default)]
    causation_id: Option<Uuid>,
    data: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not an event envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("unknown event type {0:?} (written by a newer version?)")]
    UnknownType(String),
    #[error("event {type_name} schema version {version} is newer than this build understands")]
    FutureVersion { type_name: String, version: u32 },
    #[error("event {type_name} v{version} has a malformed payload: {source}")]
    Payload {
        type_name: String,
        version: u32,
        source: serde_json::Error,
    },
}

impl Envelope {
    pub fn new(meta: EventMeta, event: impl Into<Event>) -> Self {
        Envelope {
            meta,
            event: event.into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            event_id: self.meta.event_id,
            type_name: self.event.type_name().to_owned(),
            schema_version: self.event.schema_version(),
            occurred_at: self.meta.occurred_at,
            actor: self.meta.actor,
            correlation_id: self.meta.correlation_id,
            causation_id: self.meta.causation_id,
            // Our own plain structs always serialise.
            data: self.event.data().unwrap_or(serde_json::Value::Null),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
        let data = upcast(&wire.type_name, wire.schema_version, wire.data)?;
        let event = Event::from_data(&wire.type_name, data).map_err(|e| match e {
            FromDataError::UnknownType(t) => DecodeError::UnknownType(t),
            FromDataError::Json(source) => DecodeError::Payload {
                type_name: wire.type_name.clone(),
                version: wire.schema_version,
                source,
            },
        })?;
        Ok(Envelope {
            meta: EventMeta {
                event_id: wire.event_id,
                occurred_at: wire.occurred_at,
                actor: wire.actor,
                correlation_id: wire.correlation_id,
                causation_id: wire.causation_id,
            },
            event,
        })
    }
}

/// Brings an old payload up to the version this build reads: a version
/// whose payload changed adds an arm here that rewrites older data, and the
/// stored fixture of every version keeps proving it. Versions so far only
/// widened what a payload may hold (`message.posted` v2: kind `system`), so
/// older payloads read as they are. An unknown type passes through, for
/// `Event::from_data` to name.
fn upcast(
    type_name: &str,
    version: u32,
    data: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    match current_version(type_name) {
        Some(current) if version > current => Err(DecodeError::FutureVersion {
            type_name: type_name.to_owned(),
            version,
        }),
        _ => Ok(data),
    }
}
