//! `imgfarm du [-v] [--format json]`: disk usage of the local store from
//! the store's own accounting (no tree walk): images (refs), blobs and
//! their bytes, unpacked snapshots and their bytes (as recorded when each was
//! committed), and the build cache entries; `-v` lists every blob.

use super::image::existing_store;
use super::GlobalArgs;
use clap::Args;
use comfy_table::{presets::NOTHING, Table};
use imgfarm_common::oci::store::DiskUsage;
use std::process::ExitCode;

/// `imgfarm du`
#[derive(Debug, Args)]
pub struct DuArgs {
    /// Show every blob
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format: table or json
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// `1234567` → `1.2MB` (decimal units, as docker prints sizes).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// Run `imgfarm du`.
pub fn run(g: &GlobalArgs, a: DuArgs) -> anyhow::Result<ExitCode> {
    let store = existing_store(g)?;
    let (usage, refs) = match &store {
        Some(s) => (s.du()?, s.list_refs()?.len()),
        None => (DiskUsage::default(), 0),
    };
    let cache_entries = std::fs::read_dir(g.state_dir().join("cache").join("vertices"))
        .map(|d| d.count())
        .unwrap_or(0);
    let snaps = imgfarm_worker::snapshotter::collect::usage(&g.state_dir());
    if a.format == "json" {
        let mut v = serde_json::json!({
            "images": refs,
            "blobs": usage.blob_count,
            "totalBytes": usage.total_bytes,
            "snapshots": snaps.count,
            "snapshotBytes": snaps.bytes,
            "buildCacheEntries": cache_entries,
        });
        if a.verbose {
            v["blobSizes"] = serde_json::json!(usage
                .blobs
                .iter()
                .map(|(d, s)| (d.to_string(), *s))
                .collect::<std::collections::BTreeMap<_, _>>());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    if a.verbose {
        t.set_header(["DIGEST", "SIZE"]);
        for (d, s) in &usage.blobs {
            t.add_row([d.to_string(), human(*s)]);
        }
        println!("{t}");
        t = Table::new();
        t.load_style(NOTHING);
    }
    t.set_header(["TYPE", "COUNT", "SIZE"]);
    t.add_row(["Images".to_string(), refs.to_string(), String::new()]);
    t.add_row([
        "Blobs".to_string(),
        usage.blob_count.to_string(),
        human(usage.total_bytes),
    ]);
    t.add_row([
        "Snapshots".to_string(),
        snaps.count.to_string(),
        human(snaps.bytes),
    ]);
    t.add_row([
        "Build cache".to_string(),
        cache_entries.to_string(),
        String::new(),
    ]);
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
