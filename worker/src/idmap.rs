//! User-namespace id mappings for rootless execution.
//!
//! The default is the *full* mapping rootless BuildKit, podman and buildah use: container
//! id 0 is the calling user, and container ids `1..=N` are the user's subordinate ids from
//! `/etc/subuid` and `/etc/subgid` (subuid(5)), written by the setuid helpers
//! `newuidmap`/`newgidmap` (user_namespaces(7): only a privileged writer may map ids other
//! than its own). With no subordinate range, the fallback maps only container root to the
//! user: everything else is `nobody`, so `chown` to any other id fails with EINVAL.
//!
//! A process that is already root of its user namespace (real root, or a rootless process
//! inside the build namespace of [`crate::userns`]) uses [`IdMapping::Identity`]: each step's
//! namespace maps every id the process has to itself, written directly by the process
//! (user_namespaces(7): a writer with CAP_SETUID in the parent namespace may map any id
//! mapped there), so container id N is the process's id N and build trees need no
//! translation.

use std::path::{Path, PathBuf};

/// Subordinate ids we ask for (container ids `1..=65536`), as Debian's `useradd` allocates.
pub const WANTED_RANGE: u32 = 65536;
/// Largest subuid/subgid file read.
const MAX_SUBID_FILE: u64 = 4 << 20;

/// One line of `/etc/subuid` or `/etc/subgid`: `owner:start:count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    /// First host id of the range.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

/// How container ids map to host ids.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdMapping {
    /// `0 → uid`, `1..=count → subuid..` (and the same for gids), via newuidmap/newgidmap.
    Full {
        /// Host uid of container root.
        uid: u32,
        /// Host gid of container root.
        gid: u32,
        /// First subordinate uid (container uid 1).
        subuid: u32,
        /// First subordinate gid (container gid 1).
        subgid: u32,
        /// Number of subordinate ids mapped (container ids `1..=count`).
        count: u32,
    },
    /// Only `0 → uid` and `0 → gid`, written by the namespace itself (setgroups denied).
    Single {
        /// Host uid of container root.
        uid: u32,
        /// Host gid of container root.
        gid: u32,
    },
    /// Every id of the caller's own namespace mapped to itself, written by the caller (which
    /// is root there). Real root gets the whole 32-bit range.
    Identity {
        /// Inner uid ranges of the caller's namespace.
        uids: Vec<IdExtent>,
        /// Inner gid ranges of the caller's namespace.
        gids: Vec<IdExtent>,
        /// Whether the caller's namespace allows setgroups(2) (`/proc/self/setgroups`).
        setgroups: bool,
    },
}

/// One range of ids, `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdExtent {
    /// First id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

impl IdExtent {
    fn contains(&self, id: u32) -> bool {
        id >= self.start && id - self.start < self.count
    }
}

/// The inner ranges of a `/proc/PID/uid_map` or `gid_map` text (`inner outer count` lines,
/// user_namespaces(7)); malformed lines are skipped.
pub fn parse_map_extents(text: &str) -> Vec<IdExtent> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let inner = f.next()?.parse::<u32>().ok()?;
            let _outer = f.next()?.parse::<u32>().ok()?;
            let count = f.next()?.parse::<u32>().ok()?;
            (count > 0).then_some(IdExtent {
                start: inner,
                count,
            })
        })
        .collect()
}

/// The identity map text (`id id count` lines) of `extents`.
pub fn identity_map_text(extents: &[IdExtent]) -> String {
    extents
        .iter()
        .map(|e| format!("{} {} {}\n", e.start, e.start, e.count))
        .collect()
}

/// Why the full mapping is not used (the fallback warning names what will fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdMapError {
    /// No usable line for the user in the file.
    #[error(
        "no subordinate id range for user {user} (uid {uid}) in {file}: only container root \
         is mapped, so chown to any other id will fail; add a range of {WANTED_RANGE} ids \
         (e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`)"
    )]
    NoRange {
        /// User name.
        user: String,
        /// User id.
        uid: u32,
        /// The file searched.
        file: PathBuf,
    },
    /// newuidmap or newgidmap is not installed.
    #[error(
        "{tool} not found: only container root is mapped, so chown to any other id will fail; \
         install it (apt install uidmap)"
    )]
    NoHelper {
        /// The missing tool.
        tool: &'static str,
    },
}

impl IdMapping {
    /// Host uid that container uid `inner` maps to, if mapped.
    pub fn host_uid(&self, inner: u32) -> Option<u32> {
        match *self {
            IdMapping::Full {
                uid, subuid, count, ..
            } => map_one(inner, uid, subuid, count),
            IdMapping::Single { uid, .. } => (inner == 0).then_some(uid),
            IdMapping::Identity { ref uids, .. } => {
                uids.iter().any(|e| e.contains(inner)).then_some(inner)
            }
        }
    }

    /// Host gid that container gid `inner` maps to, if mapped.
    pub fn host_gid(&self, inner: u32) -> Option<u32> {
        match *self {
            IdMapping::Full {
                gid, subgid, count, ..
            } => map_one(inner, gid, subgid, count),
            IdMapping::Single { gid, .. } => (inner == 0).then_some(gid),
            IdMapping::Identity { ref gids, .. } => {
                gids.iter().any(|e| e.contains(inner)).then_some(inner)
            }
        }
    }

    /// Arguments after the pid for `newuidmap PID ...` (`inner outer count` triples).
    pub fn newuidmap_args(&self) -> Vec<String> {
        match *self {
            IdMapping::Full {
                uid, subuid, count, ..
            } => triples(uid, subuid, count),
            IdMapping::Single { uid, .. } => vec!["0".into(), uid.to_string(), "1".into()],
            IdMapping::Identity { ref uids, .. } => identity_args(uids),
        }
    }

    /// Arguments after the pid for `newgidmap PID ...`.
    pub fn newgidmap_args(&self) -> Vec<String> {
        match *self {
            IdMapping::Full {
                gid, subgid, count, ..
            } => triples(gid, subgid, count),
            IdMapping::Single { gid, .. } => vec!["0".into(), gid.to_string(), "1".into()],
            IdMapping::Identity { ref gids, .. } => identity_args(gids),
        }
    }

    /// Whether supplementary groups can be set (setgroups is denied in a single mapping).
    pub fn allows_setgroups(&self) -> bool {
        match self {
            IdMapping::Full { .. } => true,
            IdMapping::Single { .. } => false,
            IdMapping::Identity { setgroups, .. } => *setgroups,
        }
    }

    /// Write the uid and gid maps of the user namespace of process `pid`: directly for
    /// [`IdMapping::Identity`] (the caller is root of the parent namespace,
    /// user_namespaces(7)), else with the setuid newuidmap and newgidmap.
    pub fn write_maps(&self, pid: i32) -> Result<(), String> {
        if let IdMapping::Identity { uids, gids, .. } = self {
            for (file, extents) in [("uid_map", uids), ("gid_map", gids)] {
                let path = format!("/proc/{pid}/{file}");
                std::fs::write(&path, identity_map_text(extents))
                    .map_err(|e| format!("writing {path}: {e}"))?;
            }
            return Ok(());
        }
        for (tool, args) in [
            ("newuidmap", self.newuidmap_args()),
            ("newgidmap", self.newgidmap_args()),
        ] {
            let path = find_tool(tool).ok_or_else(|| format!("{tool} not found"))?;
            let out = std::process::Command::new(&path)
                .arg(pid.to_string())
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("running {tool}: {e}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let hint = std::fs::metadata(&path).ok().and_then(|m| {
                    use std::os::unix::fs::MetadataExt;
                    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                    setuid_helper_hint(tool, &path, &stderr, m.mode(), m.uid(), &status)
                });
                return Err(format!(
                    "{tool} {pid} {} failed: {}{}",
                    args.join(" "),
                    stderr.trim(),
                    hint.map_or_else(String::new, |h| format!(" ({h})"))
                ));
            }
        }
        Ok(())
    }

    /// Whether container ids are the caller's own ids (no translation of build trees).
    pub fn is_identity(&self) -> bool {
        matches!(self, IdMapping::Identity { .. })
    }
}

fn identity_args(extents: &[IdExtent]) -> Vec<String> {
    extents
        .iter()
        .flat_map(|e| [e.start, e.start, e.count])
        .map(|n| n.to_string())
        .collect()
}

fn map_one(inner: u32, own: u32, sub: u32, count: u32) -> Option<u32> {
    if inner == 0 {
        Some(own)
    } else if inner <= count {
        sub.checked_add(inner - 1)
    } else {
        None
    }
}

fn triples(own: u32, sub: u32, count: u32) -> Vec<String> {
    vec![
        "0".into(),
        own.to_string(),
        "1".into(),
        "1".into(),
        sub.to_string(),
        count.to_string(),
    ]
}

/// Parse a subuid/subgid file and return the first range owned by `user` (by name) or by
/// `uid` (numeric owner, as shadow-utils also accepts). Ranges smaller than `wanted` are
/// used only when nothing larger exists; the count is capped at `wanted`.
pub fn find_range(text: &str, user: &str, uid: u32, wanted: u32) -> Option<SubIdRange> {
    let uid_s = uid.to_string();
    let mut best: Option<SubIdRange> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(owner), Some(start), Some(count), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if owner != user && owner != uid_s {
            continue;
        }
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        if count == 0 || start.checked_add(count - 1).is_none() {
            continue;
        }
        let r = SubIdRange {
            start,
            count: count.min(wanted),
        };
        if count >= wanted {
            return Some(r);
        }
        if best.is_none_or(|b| b.count < r.count) {
            best = Some(r);
        }
    }
    best
}

/// Decide the mapping for `user`/`uid`/`gid` from the texts of `/etc/subuid` and
/// `/etc/subgid` (pure; see [`detect`]). `helpers_present` says whether newuidmap and
/// newgidmap were found. Returns the mapping and, for the fallback, the reason.
pub fn choose(
    user: &str,
    uid: u32,
    gid: u32,
    subuid_text: &str,
    subgid_text: &str,
    helpers_present: Result<(), &'static str>,
) -> (IdMapping, Option<IdMapError>) {
    let single = IdMapping::Single { uid, gid };
    let Some(u) = find_range(subuid_text, user, uid, WANTED_RANGE) else {
        let e = IdMapError::NoRange {
            user: user.into(),
            uid,
            file: "/etc/subuid".into(),
        };
        return (single, Some(e));
    };
    let Some(g) = find_range(subgid_text, user, uid, WANTED_RANGE) else {
        let e = IdMapError::NoRange {
            user: user.into(),
            uid,
            file: "/etc/subgid".into(),
        };
        return (single, Some(e));
    };
    if let Err(tool) = helpers_present {
        return (single, Some(IdMapError::NoHelper { tool }));
    }
    (
        IdMapping::Full {
            uid,
            gid,
            subuid: u.start,
            subgid: g.start,
            count: u.count.min(g.count),
        },
        None,
    )
}

/// The mapping for the calling process: [`IdMapping::Identity`] when it is root of its
/// user namespace (real root, or inside [`crate::userns`]'s build namespace), else the one
/// for its real user read from the system files. The warning (`Some`) explains a fallback
/// to the single-id mapping.
pub fn detect() -> (IdMapping, Option<IdMapError>) {
    if nix::unistd::getuid().is_root() {
        return (own_identity(), None);
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let helpers = if find_tool("newuidmap").is_none() {
        Err("newuidmap")
    } else if find_tool("newgidmap").is_none() {
        Err("newgidmap")
    } else {
        Ok(())
    };
    choose(
        &name,
        uid,
        gid,
        &read_bounded(Path::new("/etc/subuid")),
        &read_bounded(Path::new("/etc/subgid")),
        helpers,
    )
}

/// [`IdMapping::Identity`] over the calling process's own namespace.
pub fn own_identity() -> IdMapping {
    let uids = parse_map_extents(&read_bounded(Path::new("/proc/self/uid_map")));
    let gids = parse_map_extents(&read_bounded(Path::new("/proc/self/gid_map")));
    let setgroups = read_bounded(Path::new("/proc/self/setgroups")).trim() != "deny";
    IdMapping::Identity {
        uids,
        gids,
        setgroups,
    }
}

fn read_bounded(p: &Path) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(MAX_SUBID_FILE).read_to_string(&mut s);
    }
    s
}

/// Absolute path of a setuid map helper, searched in the standard system directories
/// (not `$PATH`: a setuid helper must come from the system).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The capability bit of `CAP_SYS_ADMIN` (capability(7)).
const CAP_SYS_ADMIN: u32 = 21;

/// The capability set `field` (`CapBnd`, `CapEff`, …) of a `/proc/self/status` text; 0
/// when not found.
pub fn cap_set(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Whether a `/proc/self/status` text shows `NoNewPrivs: 1` (no_new_privs set: setuid bits
/// and file capabilities are ignored on exec).
pub fn no_new_privs(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .is_some_and(|v| v.trim() == "1")
}

/// Why `newuidmap`/`newgidmap` (`mode`, `owner`) failed with EPERM, and the fix, for a
/// process whose `/proc/self/status` is `status`; `None` when neither case below applies.
///
/// - With `NoNewPrivs: 1` the helper gets no privilege at all: file capabilities and the
///   setuid bit are both ignored, so privilege escalation must be allowed.
/// - A setuid-root helper, running as euid 0, writes the map as root, which is not the owner
///   of the new namespace, so the kernel wants CAP_SYS_ADMIN over it (user_namespaces(7),
///   "Defining user and group ID mappings"), which an unprivileged container (a Kubernetes
///   pod) does not grant: its bounding set (`CapBnd`) lacks CAP_SYS_ADMIN (an unprivileged
///   user on a host has an empty `CapEff` but a full `CapBnd`). With CAP_SETUID (CAP_SETGID)
///   as a file capability the helper keeps the caller's uid, which owns the namespace, as
///   rootless BuildKit's image installs them.
pub fn setuid_helper_hint(
    tool: &str,
    path: &Path,
    stderr: &str,
    mode: u32,
    owner: u32,
    status: &str,
) -> Option<String> {
    if !stderr.contains("Operation not permitted") {
        return None;
    }
    if no_new_privs(status) {
        return Some(format!(
            "this process runs with no_new_privs (NoNewPrivs: 1 in /proc/self/status), under \
             which file capabilities and setuid are both ignored, so {tool} gets no privilege; \
             allow privilege escalation: Kubernetes `allowPrivilegeEscalation: true` in the \
             container's securityContext, docker: no `--security-opt no-new-privileges`, \
             systemd: no `NoNewPrivileges=yes`"
        ));
    }
    let setuid_root = mode & libc::S_ISUID != 0 && owner == 0;
    let in_container = cap_set(status, "CapBnd") & (1 << CAP_SYS_ADMIN) == 0;
    if !(setuid_root && in_container) {
        return None;
    }
    let cap = if tool == "newgidmap" {
        "cap_setgid"
    } else {
        "cap_setuid"
    };
    Some(format!(
        "{tool} is setuid root, and without CAP_SYS_ADMIN (an unprivileged container) root \
         may not write the map; give it a file capability instead of the setuid bit: \
         `chmod u-s {p} && setcap {cap}=ep {p}`, as imgfarm's image does",
        p = path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod: nothing effective, and CAP_SYS_ADMIN not even in the bounding set.
    const POD: &str = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000000000\n\
                       CapBnd:\t00000000a80425fb\nNoNewPrivs:\t0\n";
    /// An unprivileged user on a host: nothing effective, a full bounding set.
    const HOST_USER: &str = "Name:\tx\nCapEff:\t0000000000000000\n\
                             CapBnd:\t000001ffffffffff\nNoNewPrivs:\t0\n";

    #[test]
    fn setuid_helpers_in_unprivileged_containers_get_a_hint() {
        assert_eq!(cap_set(POD, "CapEff"), 0);
        assert_eq!(cap_set(POD, "CapBnd"), 0xa804_25fb);
        assert_eq!(cap_set(HOST_USER, "CapBnd"), 0x1ff_ffff_ffff);
        assert_eq!(cap_set("nothing", "CapBnd"), 0);
        let eperm = "newuidmap: write to uid_map failed: Operation not permitted";
        let p = Path::new("/usr/bin/newuidmap");
        let hint = setuid_helper_hint("newuidmap", p, eperm, 0o104755, 0, POD).expect("a hint");
        assert_eq!(
            hint,
            "newuidmap is setuid root, and without CAP_SYS_ADMIN (an unprivileged container) \
             root may not write the map; give it a file capability instead of the setuid bit: \
             `chmod u-s /usr/bin/newuidmap && setcap cap_setuid=ep /usr/bin/newuidmap`, as \
             imgfarm's image does"
        );
        let g = Path::new("/usr/bin/newgidmap");
        assert!(setuid_helper_hint("newgidmap", g, eperm, 0o104755, 0, POD)
            .expect("a hint")
            .contains("setcap cap_setgid=ep /usr/bin/newgidmap"));
        // Not setuid (file capabilities already), not root-owned, or another error: no hint.
        assert_eq!(
            setuid_helper_hint("newuidmap", p, eperm, 0o100755, 0, POD),
            None
        );
        assert_eq!(
            setuid_helper_hint("newuidmap", p, eperm, 0o104755, 1000, POD),
            None
        );
        let range = "newuidmap: uid range [1-65537) -> [100000-165536) not allowed";
        assert_eq!(
            setuid_helper_hint("newuidmap", p, range, 0o104755, 0, POD),
            None
        );
    }

    /// An unprivileged user on a host has CapEff 0 too, but CAP_SYS_ADMIN in its bounding
    /// set: it is not in a container, and the container hint would be wrong.
    #[test]
    fn unprivileged_user_on_a_host_gets_no_container_hint() {
        let eperm = "newuidmap: write to uid_map failed: Operation not permitted";
        let p = Path::new("/usr/bin/newuidmap");
        assert_eq!(
            setuid_helper_hint("newuidmap", p, eperm, 0o104755, 0, HOST_USER),
            None
        );
    }

    /// Under no_new_privs neither the setuid bit nor a file capability helps: the hint says
    /// so and names the fix for Kubernetes, docker and systemd.
    #[test]
    fn no_new_privs_gets_its_own_hint() {
        assert!(!no_new_privs(POD));
        assert!(no_new_privs("NoNewPrivs:\t1\n"));
        let eperm = "newgidmap: write to gid_map failed: Operation not permitted";
        let g = Path::new("/usr/bin/newgidmap");
        for (mode, status) in [
            (
                0o104755,
                HOST_USER.replace("NoNewPrivs:\t0", "NoNewPrivs:\t1"),
            ),
            (0o100755, POD.replace("NoNewPrivs:\t0", "NoNewPrivs:\t1")),
        ] {
            let hint = setuid_helper_hint("newgidmap", g, eperm, mode, 0, &status).expect("a hint");
            assert!(
                hint.contains("file capabilities and setuid are both ignored"),
                "{hint}"
            );
            for fix in [
                "allowPrivilegeEscalation: true",
                "--security-opt no-new-privileges",
                "NoNewPrivileges=yes",
            ] {
                assert!(hint.contains(fix), "{hint}");
            }
        }
    }

    const SUB: &str = "alice:100000:65536\n# comment\nbob:165536:65536\n1003:231072:65536\n";

    #[test]
    fn finds_by_name_and_by_uid() {
        assert_eq!(
            find_range(SUB, "bob", 1002, WANTED_RANGE),
            Some(SubIdRange {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(
            find_range(SUB, "carol", 1003, WANTED_RANGE).map(|r| r.start),
            Some(231072)
        );
        assert_eq!(find_range(SUB, "dave", 1004, WANTED_RANGE), None);
    }

    #[test]
    fn ignores_malformed_lines_and_overflow() {
        let t = "x:1:2:3\nx:abc:10\nx:4294967295:2\nx:10:0\n";
        assert_eq!(find_range(t, "x", 1, WANTED_RANGE), None);
    }

    #[test]
    fn small_range_is_used_when_nothing_larger() {
        let t = "x:500000:1000\n";
        assert_eq!(
            find_range(t, "x", 1, WANTED_RANGE),
            Some(SubIdRange {
                start: 500000,
                count: 1000
            })
        );
    }

    #[test]
    fn full_mapping_maps_like_newuidmap() {
        let (m, w) = choose("bob", 1002, 1002, SUB, SUB, Ok(()));
        assert!(w.is_none());
        assert_eq!(m.host_uid(0), Some(1002));
        assert_eq!(m.host_uid(1), Some(165536));
        assert_eq!(m.host_uid(1000), Some(166535));
        assert_eq!(m.host_uid(65536), Some(231071));
        assert_eq!(m.host_uid(65537), None);
        assert_eq!(
            m.newuidmap_args(),
            ["0", "1002", "1", "1", "165536", "65536"]
        );
        assert!(m.allows_setgroups());
    }

    #[test]
    fn fallback_names_chown() {
        let (m, w) = choose("dave", 1004, 1004, SUB, SUB, Ok(()));
        assert_eq!(
            m,
            IdMapping::Single {
                uid: 1004,
                gid: 1004
            }
        );
        let msg = w.expect("warning").to_string();
        assert!(
            msg.contains("chown") && msg.contains("/etc/subuid"),
            "{msg}"
        );
        assert_eq!(m.host_uid(1000), None);
        assert!(!m.allows_setgroups());
    }

    #[test]
    fn fallback_when_helper_missing() {
        let (m, w) = choose("bob", 1002, 1002, SUB, SUB, Err("newuidmap"));
        assert!(matches!(m, IdMapping::Single { .. }));
        assert!(w
            .expect("warning")
            .to_string()
            .contains("apt install uidmap"));
    }

    #[test]
    fn identity_maps_each_own_id_to_itself() {
        let uids = parse_map_extents(
            "         0       1002          1\n         1     165536      65536\n",
        );
        assert_eq!(
            uids,
            [
                IdExtent { start: 0, count: 1 },
                IdExtent {
                    start: 1,
                    count: 65536
                }
            ]
        );
        let m = IdMapping::Identity {
            gids: uids.clone(),
            uids,
            setgroups: true,
        };
        assert_eq!(m.host_uid(0), Some(0));
        assert_eq!(m.host_uid(1000), Some(1000));
        assert_eq!(m.host_gid(65536), Some(65536));
        assert_eq!(m.host_uid(65537), None);
        assert_eq!(m.newuidmap_args(), ["0", "0", "1", "1", "1", "65536"]);
        let root = parse_map_extents("0 0 4294967295\n");
        assert_eq!(identity_map_text(&root), "0 0 4294967295\n");
    }

    #[test]
    fn missing_subgid_falls_back() {
        let (_, w) = choose("bob", 1002, 1002, SUB, "", Ok(()));
        assert!(w.expect("warning").to_string().contains("/etc/subgid"));
    }
}
