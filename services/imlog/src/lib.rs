//! The imlog application: settings, wiring of the roles, and the
//! operational commands (`replay`, `log copy`). `main.rs` only parses the
//! command line and calls into here, so tests start the same application.

/// mimalloc for every binary that links the application (the server and the
/// benches measuring it): a gateway allocates a frame per push, and glibc's
/// allocator was a twentieth of the chat load's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod cli;
pub mod config;
pub mod logcopy;

/// Where objects live (what `Settings::object_location` answers).
pub use imlog_objects::Location as ObjectLocation;
