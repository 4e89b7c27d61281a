//! `imgfarm farm status` and `imgfarm farm workers`: ask the coordinator
//! for its [`FarmStatus`] and print it as tables or JSON.

use super::config::{self, FarmFlags};
use super::connect::{client_hello, connect, credentials, runtime, CONNECT_TIMEOUT};
use super::FarmQuery;
use crate::commands::du::human;
use anyhow::{anyhow, bail};
use comfy_table::{presets::NOTHING, Table};
use imgfarm_common::proto::{BuildStatus, FarmStatus, Message, WorkerStatus};
use std::process::ExitCode;
use std::time::Duration;

/// Which command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Workers and builds.
    Status,
    /// Workers only.
    Workers,
}

/// How long the coordinator may take to answer a status request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `imgfarm farm status|workers`.
pub fn run(q: &FarmQuery, view: View) -> anyhow::Result<ExitCode> {
    let settings = config::load(&FarmFlags {
        farm: q.farm.clone(),
        tls_dir: q.tls_dir.clone(),
        name: q.name.clone(),
    })?;
    let creds = credentials(&settings)?;
    let status = runtime()?.block_on(async {
        let mut link = connect(
            &settings.farm,
            &creds,
            &client_hello(&creds),
            CONNECT_TIMEOUT,
        )
        .await?;
        link.send(&Message::StatusRequest).await?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match link.recv().await? {
                    Some(Message::Status(s)) => return Ok(s),
                    Some(Message::Refused(why)) => bail!("the coordinator refused: {why}"),
                    Some(_) => continue,
                    None => bail!("the coordinator closed the session without answering"),
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow!(
                "the coordinator at {} did not answer the status request within {}s",
                settings.farm,
                ANSWER_TIMEOUT.as_secs()
            )
        })?;
        link.close().await;
        answer
    })?;
    print!("{}", render(&status, view, &q.format)?);
    Ok(ExitCode::SUCCESS)
}

/// The text printed for `status` in `format` (`table` or `json`). Pure.
pub fn render(status: &FarmStatus, view: View, format: &str) -> anyhow::Result<String> {
    Ok(match (format, view) {
        ("json", View::Status) => format!("{}\n", serde_json::to_string_pretty(status)?),
        ("json", View::Workers) => format!("{}\n", serde_json::to_string_pretty(&status.workers)?),
        ("table", View::Workers) => format!("{}\n", workers_table(&status.workers)),
        ("table", View::Status) => format!(
            "WORKERS\n{}\n\nBUILDS\n{}\n",
            workers_table(&status.workers),
            builds_table(&status.builds)
        ),
        (other, _) => bail!("unknown --format {other:?}: use table or json"),
    })
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn ago(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s ago", ms as f64 / 1000.0)
    } else {
        format!("{}m{}s ago", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Workers: name, native and emulated platforms, slots in use/slots, cache
/// size, last heartbeat.
pub fn workers_table(workers: &[WorkerStatus]) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header([
        "NAME",
        "NATIVE",
        "EMULATED",
        "SLOTS",
        "CACHE",
        "LAST HEARTBEAT",
    ]);
    for w in workers {
        t.add_row([
            w.name.clone(),
            list(&w.native_platforms),
            list(&w.emulated_platforms),
            format!("{}/{}", w.slots_in_use, w.slots),
            human(w.cache_bytes),
            ago(w.last_heartbeat_ms),
        ]);
    }
    t.to_string()
}

/// Builds: id, state, platforms, client, vertices done/total, title.
pub fn builds_table(builds: &[BuildStatus]) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["ID", "STATE", "PLATFORMS", "CLIENT", "DONE", "TITLE"]);
    for b in builds {
        t.add_row([
            b.id.clone(),
            b.state.clone(),
            list(&b.platforms),
            b.client.clone(),
            format!("{}/{}", b.vertices_done, b.vertices_total),
            b.title.clone(),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FarmStatus {
        FarmStatus {
            workers: vec![WorkerStatus {
                name: "arm1".into(),
                native_platforms: vec!["linux/arm64".into()],
                emulated_platforms: vec![],
                slots: 4,
                slots_in_use: 1,
                cache_bytes: 1_500_000,
                last_heartbeat_ms: 1200,
            }],
            builds: vec![BuildStatus {
                id: "b-1".into(),
                state: "running".into(),
                platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
                client: "alice".into(),
                vertices_total: 9,
                vertices_done: 4,
                title: "reg/app:1".into(),
            }],
        }
    }

    #[test]
    fn tables_show_every_column() {
        let out = render(&sample(), View::Status, "table").unwrap();
        for want in [
            "NAME",
            "LAST HEARTBEAT",
            "arm1",
            "linux/arm64",
            "1/4",
            "1.5MB",
            "1.2s ago",
            "b-1",
            "running",
            "linux/amd64,linux/arm64",
            "alice",
            "4/9",
            "reg/app:1",
        ] {
            assert!(out.contains(want), "{want} missing in\n{out}");
        }
        let w = render(&sample(), View::Workers, "table").unwrap();
        assert!(w.contains("arm1") && !w.contains("b-1"), "{w}");
        assert_eq!(ago(61_500), "1m1s ago");
    }

    #[test]
    fn json_is_the_status() {
        let out = render(&sample(), View::Status, "json").unwrap();
        let back: FarmStatus = serde_json::from_str(&out).unwrap();
        assert_eq!(back, sample());
        let w: Vec<WorkerStatus> =
            serde_json::from_str(&render(&sample(), View::Workers, "json").unwrap()).unwrap();
        assert_eq!(w, sample().workers);
        assert!(render(&sample(), View::Status, "yaml").is_err());
    }
}
