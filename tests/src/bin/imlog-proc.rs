//! The imlog command line, built inside the test package so tests can run,
//! kill -9 and restart it as a separate process (Cargo exposes only a
//! package's own binaries to its tests).

fn main() -> std::process::ExitCode {
    imlog::cli::main()
}
