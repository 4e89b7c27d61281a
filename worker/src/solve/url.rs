//! ADD from an http(s) URL: the download streams to a temp file under a size
//! bound, is checked against `--checksum`, and lands as the only file of a
//! directory that COPY then reads like inline files. As BuildKit does for
//! URL sources, the file's mode is 0600, its mtime is the response's
//! `Last-Modified` when there is one, and it is never auto-extracted.

use imgfarm_common::graph::op::UrlOp;
use imgfarm_common::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Largest download accepted (4 GiB).
pub const MAX_URL_SIZE: u64 = 4 << 30;

/// Why a URL download failed.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The request could not be made or the body not read.
    #[error("ADD {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A non-success HTTP status.
    #[error("ADD {url}: the server answered HTTP {status}; check the URL")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// More than the bound.
    #[error("ADD {url}: the download is larger than {max} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The bound.
        max: u64,
    },
    /// `--checksum` did not match.
    #[error("ADD {url}: checksum mismatch: --checksum wants {expected}, the download is {actual}; fix --checksum or the URL")]
    Checksum {
        /// The URL.
        url: String,
        /// From `--checksum`.
        expected: Digest,
        /// Of the bytes fetched.
        actual: Digest,
    },
    /// Local file trouble.
    #[error("ADD {url}: {reason}")]
    Io {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Download `op.url` into a directory under `root` holding only `op.filename`
/// (mode 0600), verifying `op.checksum`. The directory is named by the content
/// digest and file name, so equal downloads share it; returns its path.
pub fn fetch_to_dir(op: &UrlOp, root: &Path) -> Result<PathBuf, UrlError> {
    let io = |e: std::io::Error| UrlError::Io {
        url: op.url.clone(),
        reason: e.to_string(),
    };
    if op.filename.is_empty()
        || op.filename.contains('/')
        || op.filename == "."
        || op.filename == ".."
    {
        return Err(UrlError::Fetch {
            url: op.url.clone(),
            reason: format!("{:?} is not a usable file name", op.filename),
        });
    }
    std::fs::create_dir_all(root).map_err(io)?;
    let tmp = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(root)
        .map_err(io)?;
    let file_path = tmp.path().join(&op.filename);
    let mut file = std::fs::File::create(&file_path).map_err(io)?;
    let (actual, last_modified) = download(&op.url, &mut file)?;
    if let Some(expected) = &op.checksum {
        if expected.algorithm() != "sha256" {
            return Err(UrlError::Fetch {
                url: op.url.clone(),
                reason: format!("--checksum {expected}: only sha256 is supported"),
            });
        }
        if *expected != actual {
            return Err(UrlError::Checksum {
                url: op.url.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    if let Some(t) = last_modified {
        file.set_modified(t).map_err(io)?;
    }
    drop(file);
    std::fs::set_permissions(
        &file_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(io)?;
    let name =
        Digest::sha256_of(format!("{actual}\n{}\n{last_modified:?}", op.filename).as_bytes());
    let dir = root.join(name.hex());
    if dir.is_dir() {
        return Ok(dir);
    }
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, &dir) {
        let _ = std::fs::remove_dir_all(&kept);
        if !dir.is_dir() {
            return Err(io(e));
        }
    }
    Ok(dir)
}

/// GET `url` into `out`; returns the sha256 of the body and Last-Modified.
fn download(url: &str, out: &mut std::fs::File) -> Result<(Digest, Option<SystemTime>), UrlError> {
    let fail = |reason: String| UrlError::Fetch {
        url: url.to_string(),
        reason,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(fail("only http and https URLs are supported".into()));
    }
    // The solver may be called from inside a tokio runtime: run the fetch on
    // its own thread with its own runtime.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail(format!("runtime: {e}")))?;
            rt.block_on(download_async(url, out))
        })
        .join()
        .unwrap_or_else(|_| Err(fail("the download thread panicked".into())))
    })
}

async fn download_async(
    url: &str,
    out: &mut std::fs::File,
) -> Result<(Digest, Option<SystemTime>), UrlError> {
    let fail = |reason: String| UrlError::Fetch {
        url: url.to_string(),
        reason,
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?', '#']).next())
        .unwrap_or("");
    let tls =
        imgfarm_common::registry::tls::client_config(host, &[]).map_err(|e| fail(e.to_string()))?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .user_agent(concat!("imgfarm/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(error_chain(&e)))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(UrlError::Status {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    if resp.content_length().is_some_and(|n| n > MAX_URL_SIZE) {
        return Err(UrlError::TooLarge {
            url: url.to_string(),
            max: MAX_URL_SIZE,
        });
    }
    let last_modified = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(error_chain(&e)))? {
        total = total.saturating_add(chunk.len() as u64);
        if total > MAX_URL_SIZE {
            return Err(UrlError::TooLarge {
                url: url.to_string(),
                max: MAX_URL_SIZE,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|e| fail(e.to_string()))?;
    }
    out.flush().map_err(|e| fail(e.to_string()))?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = format!("sha256:{hex}")
        .parse::<Digest>()
        .map_err(|e| fail(e.to_string()))?;
    Ok((digest, last_modified))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parse an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7),
/// the form servers must send in `Last-Modified`. Other forms yield `None`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.trim().split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, mon, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        let t = parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap();
        assert_eq!(t, SystemTime::UNIX_EPOCH);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(parse_http_date("garbage").is_none());
        assert!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT").is_none());
    }

    #[test]
    fn bad_scheme_and_name() {
        let op = UrlOp {
            url: "ftp://x/y".into(),
            filename: "y".into(),
            checksum: None,
            content_addressed: false,
        };
        let d = tempfile::tempdir().unwrap();
        let e = fetch_to_dir(&op, d.path()).unwrap_err().to_string();
        assert!(e.contains("only http and https"), "{e}");
        let op = UrlOp {
            filename: "..".into(),
            ..op
        };
        assert!(fetch_to_dir(&op, d.path()).is_err());
    }
}
