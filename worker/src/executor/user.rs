//! Resolution of a Dockerfile `USER` value through the image's `/etc/passwd` and
//! `/etc/group`, with runc's rules (libcontainer/user `GetExecUser`, which BuildKit uses):
//! - `""` is root;
//! - `user[:group]`, each part a name or a number;
//! - a numeric user missing from passwd is allowed (primary gid 0, home `/`);
//! - a name missing from passwd or group is an error;
//! - supplementary groups are the groups that list the user as a member.

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// Container uid.
    pub uid: u32,
    /// Container primary gid.
    pub gid: u32,
    /// Supplementary gids (without the primary one).
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, `/` when unknown.
    pub home: String,
}

/// A user or group that the image does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// Unknown user name.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// Unknown group name.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// Empty part or out-of-range number.
    #[error("invalid user {0:?}: expected user[:group] with names or ids 0..4294967294")]
    Invalid(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|n| *n != u32::MAX)
}

/// Resolve `spec` (`user[:group]`) against the texts of passwd and group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let spec_t = spec.trim();
    if spec_t.is_empty() {
        return resolve("0", passwd, group);
    }
    let (u, g) = match spec_t.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec_t, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(UserError::Invalid(spec.into()));
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (uid, mut gid, home, name) = if all_digits(u) {
        let uid = number(u).ok_or_else(|| UserError::Invalid(spec.into()))?;
        match passwd_entries(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
            None => (uid, 0, "/".to_string(), None),
        }
    } else {
        let e = passwd_entries(passwd)
            .find(|e| e.name == u)
            .ok_or_else(|| UserError::NoUser(u.into()))?;
        (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string()))
    };
    if let Some(g) = g {
        gid = if all_digits(g) {
            number(g).ok_or_else(|| UserError::Invalid(spec.into()))?
        } else {
            group_entries(group)
                .find(|e| e.name == g)
                .ok_or_else(|| UserError::NoGroup(g.into()))?
                .gid
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(n) = name {
        for e in group_entries(group) {
            if e.members.contains(&n.as_str()) && e.gid != gid && !additional_gids.contains(&e.gid)
            {
                additional_gids.push(e.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n# c\nbroken\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,root\napp:x:1000:\nstaff:x:50:app\n";

    #[test]
    fn empty_is_root() {
        let r = resolve("", PASSWD, GROUP).expect("root");
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        assert_eq!(r.additional_gids, vec![10]);
    }

    #[test]
    fn names_and_supplementary_groups() {
        let r = resolve("app", PASSWD, GROUP).expect("app");
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, vec![10, 50]);
        assert_eq!(r.home, "/home/app");
        let r = resolve("app:staff", PASSWD, GROUP).expect("app:staff");
        assert_eq!((r.uid, r.gid), (1000, 50));
        assert_eq!(r.additional_gids, vec![10]);
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let r = resolve("1234:55", PASSWD, GROUP).expect("numeric");
        assert_eq!((r.uid, r.gid, r.home.as_str()), (1234, 55, "/"));
        let r = resolve("1000", PASSWD, GROUP).expect("numeric known");
        assert_eq!((r.uid, r.gid), (1000, 1000));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("nobody2", PASSWD, GROUP),
            Err(UserError::NoUser("nobody2".into()))
        );
        assert_eq!(
            resolve("app:nogroup", PASSWD, GROUP),
            Err(UserError::NoGroup("nogroup".into()))
        );
        assert!(matches!(
            resolve("app:", PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
        assert!(matches!(
            resolve("4294967295", PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
        assert!(matches!(
            resolve("99999999999", PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
    }
}
