//! `imgfarm-farm-worker`: the farm worker without the rest of the CLI, for
//! the worker's integration tests (started as the unprivileged farm user, so
//! RUN steps are really rootless) and for debugging. It is also its own
//! executor helper. `imgfarm worker` is the command for operators.
//!
//! ```text
//! imgfarm-farm-worker --coordinator ADDR --tls-dir DIR --state DIR --name NAME
//!                     [--platforms LIST] [--slots N]
//! ```
//! Prints `worker NAME connected to ADDR (native ...; emulated ...)` on
//! stdout for each session and every other event on stderr. Stops when its
//! stdin reaches end of file (the test drops the pipe) or it is killed.

use imgfarm_common::identity::{Role, TlsDir};
use imgfarm_common::platform::parse_platform_list;
use imgfarm_worker::farm::{run, WorkerEvent, WorkerOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    imgfarm_worker::executor::helper_main_if_requested();
    match imgfarm_worker::userns::enter() {
        Ok(_) => {
            if let Some(w) = imgfarm_worker::userns::warning() {
                eprintln!("imgfarm-farm-worker: warning: {w}");
            }
        }
        Err(e) => eprintln!("imgfarm-farm-worker: not entering the build namespace: {e}"),
    }
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgfarm-farm-worker: {e}");
            ExitCode::from(2)
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let need = |name: &str| flag(&args, name).ok_or_else(|| format!("{name} is required"));
    let coordinator = need("--coordinator")?;
    let tls = TlsDir::new(need("--tls-dir")?);
    let name = need("--name")?;
    let state = PathBuf::from(need("--state")?);
    let creds = tls
        .load(Role::Worker, Some(&name))
        .map_err(|e| e.to_string())?;
    let mut opts = WorkerOptions::new(coordinator, creds, state);
    if let Some(p) = flag(&args, "--platforms") {
        opts.platforms_override = Some(parse_platform_list(&p).map_err(|e| e.to_string())?);
    }
    if let Some(n) = flag(&args, "--slots") {
        opts.slots = n
            .parse()
            .map_err(|_| format!("--slots {n:?}: not a number"))?;
    }
    opts.events = Some(Arc::new(|e: &WorkerEvent| {
        if matches!(e, WorkerEvent::Connected { .. }) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{e}");
            let _ = out.flush();
        } else {
            eprintln!("{e}");
        }
    }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let r = rt.block_on(run(opts, async {
        let _ = rx.await;
    }));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    r.map_err(|e| e.to_string())
}
