//! The imlog application: settings, wiring of the roles, and the
//! operational commands (`replay`, `log copy`). `main.rs` only parses the
//! command line and calls into here, so tests start the same application.

pub mod app;
pub mod cli;
pub mod config;
pub mod logcopy;

/// Where objects live (what `Settings::object_location` answers).
pub use imlog_objects::Location as ObjectLocation;
