//! `imgfarm`: the one binary that carries every role (user commands, the
//! coordinator, the worker and operator tools).

mod commands;
mod duration;
mod progress;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // RUN steps re-execute this binary as the executor helper.
    imgfarm_worker::executor::helper_main_if_requested();
    let cli = commands::Cli::parse();
    // Commands that touch build trees enter the build namespace while the process is still
    // single-threaded (see imgfarm_worker::userns).
    let entered = cli
        .command
        .touches_build_trees()
        .then(imgfarm_worker::userns::enter);
    init_tracing(&cli.global);
    match entered {
        Some(Err(e)) => tracing::warn!("not entering the build namespace: {e}"),
        Some(Ok(_)) => {
            if let Some(w) = imgfarm_worker::userns::warning() {
                tracing::warn!("{w}");
            }
        }
        None => {}
    }
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(global: &commands::GlobalArgs) {
    let level = if global.debug {
        "debug"
    } else {
        global.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMGFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
