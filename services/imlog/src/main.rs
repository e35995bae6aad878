//! The `imlog` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    imlog::cli::main()
}
