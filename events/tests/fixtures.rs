//! Stored samples of every event type at every schema version must keep
//! decoding: the log outlives the code that wrote it.

use imlog_events::{current_version, Envelope, Event, TYPE_NAMES};
use std::path::Path;

fn fixture_of(name: &str, version: u32) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.v{version}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()))
}

fn fixture(name: &str) -> Vec<u8> {
    fixture_of(name, 1)
}

fn current(name: &str) -> u32 {
    current_version(name).expect("a registered type")
}

#[test]
fn every_version_of_every_event_type_has_a_fixture_that_decodes() {
    for name in TYPE_NAMES {
        for version in 1..=current(name) {
            let bytes = fixture_of(name, version);
            let envelope =
                Envelope::decode(&bytes).unwrap_or_else(|e| panic!("{name} v{version}: {e}"));
            assert_eq!(envelope.event.type_name(), *name);
        }
    }
}

#[test]
fn current_fixtures_re_encode_to_the_same_json() {
    for name in TYPE_NAMES {
        let bytes = fixture_of(name, current(name));
        let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let envelope = Envelope::decode(&bytes).unwrap();
        let again: serde_json::Value = serde_json::from_slice(&envelope.encode()).unwrap();
        assert_eq!(stored, again, "{name} changed its wire form");
    }
}

#[test]
fn decoded_fixture_has_the_stored_values() {
    let envelope = Envelope::decode(&fixture("message.posted")).unwrap();
    match envelope.event {
        Event::MessagePosted(m) => {
            assert_eq!(m.thread_id.get(), 12);
            assert_eq!(m.body, "hello, world");
            assert_eq!(m.recipients.len(), 1);
        }
        other => panic!("wrong event {other:?}"),
    }
    assert_eq!(envelope.meta.actor.map(|a| a.get()), Some(7));
}

#[test]
fn unknown_types_and_future_versions_are_named_errors() {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("session.ended")).unwrap();
    v["type"] = "session.teleported".into();
    let err = Envelope::decode(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("session.teleported"), "{err}");

    let mut v: serde_json::Value = serde_json::from_slice(&fixture("session.ended")).unwrap();
    v["schema_version"] = 99.into();
    let err = Envelope::decode(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");

    assert!(Envelope::decode(b"not json").is_err());
}
