//! `imgfarm-exec-probe`: drives the rootless executor from the command line, as the calling
//! user. Used by the worker's integration tests (started as the unprivileged farm user) and
//! for measurements. It is also its own executor helper.
//!
//! ```text
//! imgfarm-exec-probe run REQUEST.json        # one ExecRequest (JSON)
//! imgfarm-exec-probe unpack LAYER DEST SCRATCH [PARENT...]
//! imgfarm-exec-probe remove PATH
//! imgfarm-exec-probe bench REQUEST.json N    # N runs, prints per-run ms
//! imgfarm-exec-probe parallel REQUEST.json N # N concurrent runs from N threads (upper and
//!                                            # work get a -N suffix); prints each stdout
//! ```
//! `run` honours `IMGFARM_PROBE_MAPPING=single` (force the single-id fallback) and
//! `IMGFARM_PROBE_MAPPING=unowned-range` (a full mapping newuidmap refuses), and
//! `IMGFARM_PROBE_CANCEL_AFTER_MS=N` (trigger the step's cancel token after N ms). It writes the step's stdout and stderr through, then one line
//! `PROBE-RESULT {json}` on stderr; it exits 0 even when the step fails (the result says).

use imgfarm_worker::executor::{self, CancelToken, ExecError, ExecRequest, Executor};
use imgfarm_worker::idmap::IdMapping;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    executor::helper_main_if_requested();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") if args.len() == 3 => run(&args[2]),
        Some("bench") if args.len() == 4 => bench(&args[2], &args[3]),
        Some("parallel") if args.len() == 4 => parallel(&args[2], &args[3]),
        Some("unpack") if args.len() >= 5 => {
            let parents: Vec<PathBuf> = args[5..].iter().map(PathBuf::from).collect();
            let t = std::time::Instant::now();
            match Executor::new().unpack_layer_file(
                args[2].as_ref(),
                args[3].as_ref(),
                &parents,
                args[4].as_ref(),
            ) {
                Ok(r) => {
                    println!(
                        "unpacked {} entries, {} files, {} bytes in {:.1} ms",
                        r.entries,
                        r.files,
                        r.bytes,
                        t.elapsed().as_secs_f64() * 1000.0
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Some("remove") if args.len() == 3 => match Executor::new().remove_tree(args[2].as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        },
        _ => fail("usage: imgfarm-exec-probe run REQ.json | bench REQ.json N | unpack LAYER DEST SCRATCH [PARENT...] | remove PATH"),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("imgfarm-exec-probe: {msg}");
    ExitCode::from(2)
}

fn load(path: &str) -> Result<ExecRequest, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("parsing {path}: {e}"))
}

fn run(path: &str) -> ExitCode {
    let req = match load(path) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let mut ex = Executor::new();
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    match std::env::var("IMGFARM_PROBE_MAPPING").as_deref() {
        Ok("single") => ex = ex.with_mapping(IdMapping::Single { uid, gid }),
        // A range the user does not own: newuidmap refuses it.
        Ok("unowned-range") => {
            ex = ex.with_mapping(IdMapping::Full {
                uid,
                gid,
                subuid: 3_000_000_000,
                subgid: 3_000_000_000,
                count: 65536,
            })
        }
        _ => {}
    }
    let cancel = CancelToken::new();
    if let Some(ms) = std::env::var("IMGFARM_PROBE_CANCEL_AFTER_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let c = cancel.clone();
        if ms == 0 {
            c.cancel();
        } else {
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                c.cancel();
            });
        }
    }
    let t = std::time::Instant::now();
    let r = ex.run_cancellable(&req, &cancel, std::io::stdout(), std::io::stderr());
    let result = match r {
        Ok(rep) => serde_json::json!({
            "ok": true,
            "code": 0,
            "warnings": rep.warnings,
            "setup_ms": rep.setup.map(|d| d.as_secs_f64() * 1000.0),
            "total_ms": rep.total.as_secs_f64() * 1000.0,
        }),
        Err(ExecError::Failed {
            code, tail, how, ..
        }) => serde_json::json!({
            "ok": false, "code": code, "tail": tail, "how": how,
        }),
        Err(ExecError::Cancelled) => serde_json::json!({
            "ok": false, "cancelled": true, "total_ms": t.elapsed().as_secs_f64() * 1000.0,
        }),
        Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
    };
    let _ = std::io::stdout().flush();
    eprintln!("PROBE-RESULT {result}");
    ExitCode::SUCCESS
}

fn bench(path: &str, n: &str) -> ExitCode {
    let req = match load(path) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Ok(n) = n.parse::<usize>() else {
        return fail("N must be a number");
    };
    let ex = Executor::new();
    let mut setup = Vec::new();
    let mut total = Vec::new();
    for _ in 0..n {
        match ex.run(&req, std::io::sink(), std::io::sink()) {
            Ok(r) => {
                setup.push(r.setup.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0));
                total.push(r.total.as_secs_f64() * 1000.0);
            }
            Err(e) => return fail(&e.to_string()),
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "{{\"runs\":{n},\"setup_median_ms\":{:.2},\"total_median_ms\":{:.2}}}",
        med(&mut setup),
        med(&mut total)
    );
    ExitCode::SUCCESS
}

/// Run N copies of the request at once from N threads of this process: the executor must be
/// safe to call from a multithreaded program.
fn parallel(path: &str, n: &str) -> ExitCode {
    let req = match load(path) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Ok(n) = n.parse::<usize>() else {
        return fail("N must be a number");
    };
    let ex = Executor::new();
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let mut r = req.clone();
                r.upper = suffixed(&r.upper, i);
                r.work = suffixed(&r.work, i);
                let ex = &ex;
                s.spawn(move || {
                    std::fs::create_dir_all(&r.upper).map_err(|e| e.to_string())?;
                    std::fs::create_dir_all(&r.work).map_err(|e| e.to_string())?;
                    let mut out = Vec::new();
                    ex.run(&r, &mut out, std::io::sink())
                        .map_err(|e| e.to_string())?;
                    Ok(String::from_utf8_lossy(&out).into_owned())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut ok = true;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(out) => print!("{i}: {out}"),
            Err(e) => {
                ok = false;
                println!("{i}: ERROR {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn suffixed(p: &std::path::Path, i: usize) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!("-{i}"));
    PathBuf::from(s)
}
