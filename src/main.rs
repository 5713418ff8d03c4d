//! The `agent` binary: a thin wrapper over [`agent::app::main`].

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(agent::app::main(&args))
}
