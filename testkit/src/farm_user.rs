//! The unprivileged farm user with 65536-id subordinate uid/gid ranges.

use crate::cmd::{have_tool, run_checked};
use crate::skip::{effective_uid, is_root, Unavailable};
use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The user created (as root) for rootless tests.
pub const FARM_USER_NAME: &str = "imgfarm-test";
/// The size of the subordinate id ranges the user gets (ids 1..=65536 inside a user namespace).
const RANGE: u64 = 65536;

/// Serialises user creation inside one test process.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// An unprivileged user that owns subordinate uid and gid ranges of at least 65536 ids
/// (`/etc/subuid`, `/etc/subgid`, see subuid(5)), so it can build rootless.
#[derive(Debug, Clone)]
pub struct FarmUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    subuid_start: u64,
    subgid_start: u64,
    switch: bool,
}

impl FarmUser {
    /// As root: the user `imgfarm-test`, created with `useradd -m` if absent and given
    /// 65536-id subuid/subgid ranges if it lacks them. As non-root: the current user, if it
    /// has such ranges; otherwise an [`Unavailable`] error.
    pub fn get() -> anyhow::Result<FarmUser> {
        for tool in ["newuidmap", "newgidmap", "unshare", "setpriv"] {
            if !have_tool(tool) {
                return Err(Unavailable::new(
                    format!("{tool} is missing"),
                    "run `sudo scripts/setup.sh --dev` (installs uidmap and util-linux)",
                )
                .into());
            }
        }
        if is_root() {
            let _g = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            ensure_user(FARM_USER_NAME)?;
            let mut u = lookup(FARM_USER_NAME)?;
            u.switch = true;
            Ok(u)
        } else {
            let uid = effective_uid().context("reading the current uid")?;
            let mut u = lookup(&uid.to_string()).map_err(|e| {
                anyhow::Error::new(Unavailable::new(
                    format!(
                        "the current user (uid {uid}) has no usable subuid/subgid ranges: {e:#}"
                    ),
                    "ask root to run `scripts/setup.sh --dev`, or add 65536-id ranges for \
                     you to /etc/subuid and /etc/subgid",
                ))
            })?;
            u.switch = false;
            Ok(u)
        }
    }

    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The primary gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// First id of the user's 65536-id range in `/etc/subuid`.
    pub fn subuid_start(&self) -> u64 {
        self.subuid_start
    }

    /// First id of the user's 65536-id range in `/etc/subgid`.
    pub fn subgid_start(&self) -> u64 {
        self.subgid_start
    }

    /// A command that runs `program` as this user: through
    /// `setpriv --reuid --regid --init-groups` with `HOME`, `USER` and `LOGNAME` set and the
    /// working directory at the home directory (override with `current_dir`) when we are
    /// root; the plain command otherwise.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        if !self.switch {
            return Command::new(program);
        }
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(&self.home);
        c
    }

    /// A command that runs `program` as root of a fresh user namespace owned by this user,
    /// with the user's subordinate ids mapped (`unshare --map-auto --map-root-user`; in
    /// util-linux 2.38 that maps inner 0 to the user and inner 1..=65535 to the sub-ids).
    pub fn userns_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.command("unshare");
        c.args(["--map-auto", "--map-root-user", "--"]).arg(program);
        c
    }

    /// Delete `path` (which may hold files owned by the user's sub-ids, which the user
    /// cannot delete from outside) by running `rm -rf` as root of the user's namespace.
    /// Missing paths are fine. As root, anything left over is removed directly.
    pub fn remove_dir_all(&self, path: &Path) -> anyhow::Result<()> {
        if path.symlink_metadata().is_err() {
            return Ok(());
        }
        let out = self
            .userns_command("rm")
            .arg("-rf")
            .arg("--")
            .arg(path)
            .output()
            .context("running rm -rf in a user namespace")?;
        if path.symlink_metadata().is_ok() {
            if self.switch {
                std::fs::remove_dir_all(path)
                    .with_context(|| format!("removing {} as root", path.display()))?;
            } else {
                bail!(
                    "could not remove {} from inside a user namespace: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// A fresh directory under the system temp dir owned by this user; deleted on drop with
    /// [`FarmUser::remove_dir_all`].
    pub fn tempdir(&self) -> anyhow::Result<UserTempDir> {
        let dir = tempfile::Builder::new()
            .prefix("imgfarm-user-")
            .tempdir()
            .context("creating a temp dir")?
            .keep();
        if self.switch {
            std::os::unix::fs::chown(&dir, Some(self.uid), Some(self.gid))
                .with_context(|| format!("chown {}", dir.display()))?;
        }
        Ok(UserTempDir {
            path: dir,
            user: self.clone(),
        })
    }
}

/// A temp dir owned by the farm user, removed from inside the user's namespace on drop.
#[derive(Debug)]
pub struct UserTempDir {
    path: PathBuf,
    user: FarmUser,
}

impl UserTempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UserTempDir {
    fn drop(&mut self) {
        if let Err(e) = self.user.remove_dir_all(&self.path) {
            eprintln!("warning: could not clean up {}: {e:#}", self.path.display());
        }
    }
}

/// `getent passwd KEY` plus the subordinate ranges.
fn lookup(key: &str) -> anyhow::Result<FarmUser> {
    let out = run_checked(Command::new("getent").args(["passwd", key]))
        .with_context(|| format!("looking up user {key}"))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = line.trim().split(':').collect();
    if f.len() < 7 {
        bail!("unexpected passwd entry {line:?}");
    }
    let name = f[0].to_string();
    let uid: u32 = f[2].parse().context("passwd uid")?;
    let gid: u32 = f[3].parse().context("passwd gid")?;
    let subuid_start = sub_range(Path::new("/etc/subuid"), &name, uid)?;
    let subgid_start = sub_range(Path::new("/etc/subgid"), &name, uid)?;
    Ok(FarmUser {
        name,
        uid,
        gid,
        home: PathBuf::from(f[5]),
        subuid_start,
        subgid_start,
        switch: false,
    })
}

/// The start of the first range of at least 65536 ids for `name` (or numeric `uid`).
fn sub_range(file: &Path, name: &str, uid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let uid_s = uid.to_string();
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() == 3 && (f[0] == name || f[0] == uid_s) {
            if let (Ok(start), Ok(count)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) {
                if count >= RANGE {
                    return Ok(start);
                }
            }
        }
    }
    bail!("no range of {RANGE} ids for {name} in {}", file.display())
}

/// Create `name` if absent and give it ranges if it has none (root only).
fn ensure_user(name: &str) -> anyhow::Result<()> {
    let exists = Command::new("getent")
        .args(["passwd", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", name])
            .output()
            .context("running useradd")?;
        // Exit 9: created concurrently by another process; fine.
        if !out.status.success() && out.status.code() != Some(9) {
            bail!(
                "useradd -m {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let uid_s =
        String::from_utf8_lossy(&run_checked(Command::new("id").args(["-u", name]))?.stdout)
            .trim()
            .to_string();
    let uid: u32 = uid_s.parse().context("id -u")?;
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        if sub_range(Path::new(file), name, uid).is_ok() {
            continue;
        }
        let start = next_free_start(Path::new(file));
        run_checked(
            Command::new("usermod")
                .arg(flag)
                .arg(format!("{start}-{}", start + RANGE - 1))
                .arg(name),
        )?;
    }
    Ok(())
}

/// Past the highest range in `file`, rounded up to a multiple of 65536, at least 100000.
fn next_free_start(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut max = 100_000u64;
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() == 3 {
            if let (Ok(s), Ok(c)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) {
                max = max.max(s.saturating_add(c));
            }
        }
    }
    max.div_ceil(RANGE) * RANGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_range_needs_a_full_range_for_the_name_or_uid() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("subuid");
        std::fs::write(&f, "a:100000:1000\na:200000:65536\n1002:300000:65536\n").expect("write");
        assert_eq!(sub_range(&f, "a", 1001).expect("a"), 200_000);
        assert_eq!(sub_range(&f, "b", 1002).expect("by uid"), 300_000);
        assert!(sub_range(&f, "c", 1003).is_err());
        assert!(sub_range(&d.path().join("missing"), "a", 1001).is_err());
    }

    #[test]
    fn next_free_start_is_past_every_range_and_aligned() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("subuid");
        assert_eq!(next_free_start(&f), 131_072);
        std::fs::write(&f, "a:100000:65536\nb:165536:65536\njunk\n").expect("write");
        assert_eq!(next_free_start(&f), 262_144);
    }
}
