//! User-namespace id mappings (the `uid_map`/`gid_map` format of
//! user_namespaces(7): container id, host id, count).
//!
//! A rootless build's upper dir is owned by subordinate ids on the host
//! (container uid 1000 is host uid `subuid_start + 999` with the usual
//! `0 → user, 1.. → subuids` map). When a layer is created or applied
//! *outside* the namespace, ids are translated with this map so the layer
//! records container ids, exactly as if the work ran inside.

use serde::{Deserialize, Serialize};

/// One contiguous range: container ids `container..container+size` are host
/// ids `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id inside the namespace.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// Number of ids.
    pub size: u32,
}

/// uid and gid mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// uid ranges.
    pub uids: Vec<IdRange>,
    /// gid ranges.
    pub gids: Vec<IdRange>,
}

/// The id the kernel shows for an unmapped id (`/proc/sys/kernel/overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(r.container)?;
        (off < r.size).then(|| r.host.checked_add(off)).flatten()
    })
}

fn to_container(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(r.host)?;
        (off < r.size)
            .then(|| r.container.checked_add(off))
            .flatten()
    })
}

impl IdMap {
    /// The usual rootless map: container 0 is `uid`/`gid`, container
    /// 1..=`count` are the subordinate ranges starting at `subuid`/`subgid`.
    pub fn rootless(uid: u32, gid: u32, subuid: u32, subgid: u32, count: u32) -> Self {
        Self {
            uids: vec![
                IdRange {
                    container: 0,
                    host: uid,
                    size: 1,
                },
                IdRange {
                    container: 1,
                    host: subuid,
                    size: count,
                },
            ],
            gids: vec![
                IdRange {
                    container: 0,
                    host: gid,
                    size: 1,
                },
                IdRange {
                    container: 1,
                    host: subgid,
                    size: count,
                },
            ],
        }
    }

    /// Host uid for a container uid, if mapped.
    pub fn uid_to_host(&self, id: u32) -> Option<u32> {
        to_host(&self.uids, id)
    }

    /// Host gid for a container gid, if mapped.
    pub fn gid_to_host(&self, id: u32) -> Option<u32> {
        to_host(&self.gids, id)
    }

    /// Container uid for a host uid; unmapped ids become [`OVERFLOW_ID`],
    /// as the kernel shows them inside the namespace.
    pub fn uid_to_container(&self, id: u32) -> u32 {
        to_container(&self.uids, id).unwrap_or(OVERFLOW_ID)
    }

    /// Container gid for a host gid (see [`IdMap::uid_to_container`]).
    pub fn gid_to_container(&self, id: u32) -> u32 {
        to_container(&self.gids, id).unwrap_or(OVERFLOW_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_map_translates_both_ways() {
        let m = IdMap::rootless(1001, 1001, 100_000, 100_000, 65536);
        assert_eq!(m.uid_to_host(0), Some(1001));
        assert_eq!(m.uid_to_host(1000), Some(100_999));
        assert_eq!(m.uid_to_host(65537), None);
        assert_eq!(m.uid_to_container(100_999), 1000);
        assert_eq!(m.uid_to_container(1001), 0);
        assert_eq!(m.uid_to_container(0), OVERFLOW_ID);
        assert_eq!(m.gid_to_container(100_000), 1);
        let wrap = IdMap {
            uids: vec![IdRange {
                container: 0,
                host: u32::MAX,
                size: 10,
            }],
            gids: vec![],
        };
        assert_eq!(wrap.uid_to_host(5), None);
    }
}
