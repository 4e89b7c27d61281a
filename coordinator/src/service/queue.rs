//! The persisted build queue and result cache: `<state>/coordinator.db`
//! (SQLite through rusqlite, bundled). A build is written before it is
//! accepted, so an accepted build survives a restart; vertex results are
//! written as they arrive, so a resumed build starts from its finished
//! vertices.
//!
//! Registry credentials are never written: the output is stored with its
//! credential list emptied, and only whether there were any.

use crate::engine::ports::{
    failed_record, now_ms, output_without_credentials, Journal, JournalError, StoredBuild,
    UsedResult,
};
use imgfarm_common::farm::{self, FarmDefinition, OutputSpec, VertexResult};
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::BuildFinished;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// SQLite failed.
    #[error("coordinator database {path}: {source}; check the --state directory is writable and not used by another coordinator")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
}

/// The open database.
#[derive(Debug)]
pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

/// One coordinator per state directory: the exclusive lock is taken on
/// first access and held until the connection closes (the OS drops it if
/// the process dies).
const SCHEMA: &str = "
PRAGMA locking_mode = EXCLUSIVE;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS builds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    client TEXT NOT NULL,
    state TEXT NOT NULL,
    definition BLOB NOT NULL,
    output BLOB NOT NULL,
    had_credentials INTEGER NOT NULL,
    created INTEGER NOT NULL,
    error TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    result TEXT NOT NULL,
    last_used INTEGER NOT NULL DEFAULT 0
);
";

/// Databases written before results had a last-use time get the column
/// (rows count as used long ago, so they are the first to go).
const ADD_LAST_USED: &str = "ALTER TABLE results ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0";

impl Queue {
    /// Opens (creating if needed) `<state>/coordinator.db`.
    pub fn open(state_dir: &Path) -> Result<Self, QueueError> {
        let path = state_dir.join("coordinator.db");
        let sql = |source| QueueError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let has_last_used: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('results') WHERE name = 'last_used'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(sql)?
            > 0;
        if !has_last_used {
            conn.execute_batch(ADD_LAST_USED).map_err(sql)?;
        }
        conn.execute_batch("CREATE INDEX IF NOT EXISTS results_last_used ON results (last_used)")
            .map_err(sql)?;
        Ok(Self { conn, path })
    }

    fn sql(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes a new build (state `queued`).
    pub fn insert_build(
        &self,
        id: &str,
        client: &str,
        definition: &FarmDefinition,
        output: &OutputSpec,
        created: u64,
    ) -> Result<(), QueueError> {
        self.conn
            .execute(
                "INSERT INTO builds (id, client, state, definition, output, had_credentials, created)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
                params![
                    id,
                    client,
                    farm::encode(definition),
                    farm::encode(&output_without_credentials(output)),
                    !output.credentials.is_empty(),
                    created as i64
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Updates a build's state (and, once it ended, its result).
    pub fn set_state(
        &self,
        id: &str,
        state: &str,
        result: Option<&BuildFinished>,
    ) -> Result<(), QueueError> {
        let error = result.and_then(|r| r.result.as_ref().err().cloned());
        let result = result.map(|r| String::from_utf8_lossy(&farm::encode(r)).into_owned());
        self.conn
            .execute(
                "UPDATE builds SET state = ?2, error = ?3, result = ?4 WHERE id = ?1",
                params![id, state, error, result],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Builds still queued or running, oldest first. A row that no longer
    /// decodes is marked failed and skipped.
    pub fn load_active(&self) -> Result<Vec<StoredBuild>, QueueError> {
        let rows = self.query_builds("WHERE state IN ('queued', 'running') ORDER BY seq", [])?;
        let mut out = Vec::new();
        for r in rows {
            match r {
                Ok(b) => out.push(b),
                Err((id, why)) => {
                    tracing::warn!(build = %id, "stored build unreadable, marking it failed: {why}");
                    let why = format!("the stored build could not be read again: {why}");
                    self.set_state(&id, "failed", Some(&failed_record(&id, why)))?;
                }
            }
        }
        Ok(out)
    }

    /// One build by id.
    pub fn get_build(&self, id: &str) -> Result<Option<StoredBuild>, QueueError> {
        let rows = self.query_builds("WHERE id = ?1", [id])?;
        Ok(rows.into_iter().next().and_then(|r| r.ok()))
    }

    #[allow(clippy::type_complexity)]
    fn query_builds<P: rusqlite::Params>(
        &self,
        tail: &str,
        p: P,
    ) -> Result<Vec<Result<StoredBuild, (String, String)>>, QueueError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, client, state, definition, output, had_credentials, created, result
                 FROM builds {tail}"
            ))
            .map_err(|e| self.sql(e))?;
        let raw = stmt
            .query_map(p, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(raw
            .into_iter()
            .map(|(id, client, state, def, out, had, created, result)| {
                let definition: FarmDefinition = farm::decode(&def, "stored build definition")
                    .map_err(|e| (id.clone(), e.to_string()))?;
                let output: OutputSpec = farm::decode(&out, "stored build output")
                    .map_err(|e| (id.clone(), e.to_string()))?;
                let result = match result {
                    Some(s) => Some(
                        farm::decode::<BuildFinished>(s.as_bytes(), "stored build result")
                            .map_err(|e| (id.clone(), e.to_string()))?,
                    ),
                    None => None,
                };
                Ok(StoredBuild {
                    id,
                    client,
                    state,
                    definition,
                    output,
                    had_credentials: had,
                    created: created.max(0) as u64,
                    result,
                })
            })
            .collect())
    }

    /// Stores a vertex result.
    pub fn put_result(&self, key: &Digest, result: &VertexResult) -> Result<(), QueueError> {
        let json = String::from_utf8_lossy(&farm::encode(result)).into_owned();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO results (key, result, last_used) VALUES (?1, ?2, ?3)",
                params![key.as_str(), json, now_ms() as i64],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// One stored result (a use: its last-use time becomes now).
    pub fn get_result(&self, key: &Digest) -> Result<Option<VertexResult>, QueueError> {
        self.touch(key)?;
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT result FROM results WHERE key = ?1",
                [key.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(s.and_then(|s| farm::decode(s.as_bytes(), "stored vertex result").ok()))
    }

    /// Whether a result is stored under `key` (the primary key: one index
    /// lookup, so nothing needs to hold every key in memory). A hit is a
    /// use: its last-use time becomes now.
    pub fn has_result(&self, key: &Digest) -> Result<bool, QueueError> {
        self.touch(key)
    }

    /// Sets `key`'s last use to now; whether it is stored.
    fn touch(&self, key: &Digest) -> Result<bool, QueueError> {
        self.conn
            .execute(
                "UPDATE results SET last_used = ?2 WHERE key = ?1",
                params![key.as_str(), now_ms() as i64],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sql(e))
    }

    /// Results last used at or after `since_ms` (all: 0), oldest use first.
    /// A row that no longer decodes is listed with an empty result naming
    /// no blob (so a collection forgets it, and reuses nothing from it).
    pub fn used_results(&self, since_ms: u64) -> Result<Vec<UsedResult>, QueueError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT key, result, last_used FROM results WHERE last_used >= ?1 ORDER BY last_used",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([since_ms as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, json, t)| {
                Some(UsedResult {
                    key: k.parse().ok()?,
                    result: farm::decode(json.as_bytes(), "stored vertex result")
                        .unwrap_or_default(),
                    last_used_ms: t.max(0) as u64,
                })
            })
            .collect())
    }

    /// Deletes the results of `keys` (one transaction).
    pub fn forget_results(&self, keys: &[Digest]) -> Result<(), QueueError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.sql(e))?;
        for k in keys {
            tx.execute("DELETE FROM results WHERE key = ?1", [k.as_str()])
                .map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    /// Every stored result key.
    pub fn result_keys(&self) -> Result<Vec<Digest>, QueueError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key FROM results")
            .map_err(|e| self.sql(e))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sql(e))?
            .filter_map(|k| k.ok().and_then(|k| k.parse().ok()))
            .collect();
        Ok(keys)
    }
}

/// The farm's journal: every call is one SQLite statement.
impl Journal for Queue {
    fn insert_build(
        &self,
        id: &str,
        client: &str,
        definition: &FarmDefinition,
        output: &OutputSpec,
        created: u64,
    ) -> Result<(), JournalError> {
        Queue::insert_build(self, id, client, definition, output, created).map_err(journal)
    }
    fn set_state(
        &self,
        id: &str,
        state: &str,
        result: Option<&BuildFinished>,
    ) -> Result<(), JournalError> {
        Queue::set_state(self, id, state, result).map_err(journal)
    }
    fn load_active(&self) -> Result<Vec<StoredBuild>, JournalError> {
        Queue::load_active(self).map_err(journal)
    }
    fn get_build(&self, id: &str) -> Result<Option<StoredBuild>, JournalError> {
        Queue::get_build(self, id).map_err(journal)
    }
    fn put_result(&self, key: &Digest, result: &VertexResult) -> Result<(), JournalError> {
        Queue::put_result(self, key, result).map_err(journal)
    }
    fn get_result(&self, key: &Digest) -> Result<Option<VertexResult>, JournalError> {
        Queue::get_result(self, key).map_err(journal)
    }
    fn has_result(&self, key: &Digest) -> Result<bool, JournalError> {
        Queue::has_result(self, key).map_err(journal)
    }
    fn result_usage(&self) -> Result<Vec<UsedResult>, JournalError> {
        Queue::used_results(self, 0).map_err(journal)
    }
    fn results_used_since(&self, since_ms: u64) -> Result<Vec<UsedResult>, JournalError> {
        Queue::used_results(self, since_ms).map_err(journal)
    }
    fn forget_results(&self, keys: &[Digest]) -> Result<(), JournalError> {
        Queue::forget_results(self, keys).map_err(journal)
    }
}

fn journal(e: QueueError) -> JournalError {
    JournalError(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfarm_common::farm::{FarmTarget, RegistryCredential};
    use imgfarm_common::graph::op::{ContextOp, Op};
    use imgfarm_common::graph::Vertex;

    fn def() -> FarmDefinition {
        let v = Vertex::new(
            None,
            Op::Context(ContextOp {
                sources: vec![".".into()],
                excludes: vec![],
                selection: Digest::sha256_of(b"s"),
            }),
            vec![],
            "ctx".into(),
            0,
        );
        FarmDefinition {
            targets: vec![FarmTarget {
                platform: "linux/amd64".into(),
                export: v.key.clone(),
            }],
            vertices: vec![v],
            context: None,
            title: "t".into(),
        }
    }

    #[test]
    fn builds_and_results_survive_reopening_without_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputSpec {
            push: vec!["localhost:5000/a:1".into()],
            credentials: vec![RegistryCredential {
                host: "localhost:5000".into(),
                username: "u".into(),
                secret: "hunter2".into(),
            }],
            insecure: vec![],
            no_cache: false,
            timeout_secs: Some(600),
            step_timeout_secs: None,
        };
        {
            let q = Queue::open(dir.path()).unwrap();
            q.insert_build("b1", "alice", &def(), &out, 5).unwrap();
            q.insert_build("b2", "alice", &def(), &OutputSpec::default(), 6)
                .unwrap();
            let fin = BuildFinished {
                build_id: "b2".into(),
                result: Err("boom".into()),
                index: None,
                pushed: vec![],
            };
            q.set_state("b2", "failed", Some(&fin)).unwrap();
            q.set_state("b1", "running", None).unwrap();
            q.put_result(&Digest::sha256_of(b"k"), &VertexResult::default())
                .unwrap();
        }
        let q = Queue::open(dir.path()).unwrap();
        let active = q.load_active().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].id, "b1");
        assert_eq!(active[0].state, "running");
        assert!(active[0].had_credentials);
        assert!(active[0].output.credentials.is_empty());
        assert_eq!(active[0].definition, def());
        let b2 = q.get_build("b2").unwrap().unwrap();
        assert_eq!(b2.result.unwrap().result, Err("boom".into()));
        assert!(q.get_build("nope").unwrap().is_none());
        assert_eq!(q.result_keys().unwrap(), vec![Digest::sha256_of(b"k")]);
        assert!(q.get_result(&Digest::sha256_of(b"k")).unwrap().is_some());
        let raw = std::fs::read(dir.path().join("coordinator.db")).unwrap();
        let wal = std::fs::read(dir.path().join("coordinator.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(
                !bytes.windows(7).any(|w| w == b"hunter2"),
                "a secret reached the database"
            );
        }
    }

    #[test]
    fn results_carry_their_last_use_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        q.put_result(&a, &VertexResult::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        q.put_result(&b, &VertexResult::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let t0 = now_ms();
        let keys = |v: Vec<UsedResult>| v.into_iter().map(|u| u.key).collect::<Vec<_>>();
        assert_eq!(keys(q.used_results(0).unwrap()), vec![a.clone(), b.clone()]);
        assert!(q.has_result(&a).unwrap(), "a lookup is a use");
        assert_eq!(keys(q.used_results(0).unwrap()), vec![b.clone(), a.clone()]);
        assert_eq!(keys(q.used_results(t0).unwrap()), vec![a.clone()]);
        q.forget_results(std::slice::from_ref(&a)).unwrap();
        assert!(!q.has_result(&a).unwrap());
        assert!(q.has_result(&b).unwrap());
    }

    #[test]
    fn a_database_without_last_use_times_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("coordinator.db")).unwrap();
            c.execute_batch(
                "CREATE TABLE results (key TEXT PRIMARY KEY, result TEXT NOT NULL);
                 INSERT INTO results VALUES ('sha256:0000000000000000000000000000000000000000000000000000000000000000', '{}');",
            )
            .unwrap();
        }
        let q = Queue::open(dir.path()).unwrap();
        let all = q.used_results(0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].last_used_ms, 0);
    }

    #[test]
    fn a_second_coordinator_on_the_same_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Queue::open(dir.path()).unwrap();
        let e = Queue::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not used by another coordinator"), "{e}");
        drop(first);
        Queue::open(dir.path()).unwrap();
    }

    #[test]
    fn unreadable_rows_are_failed_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        q.conn
            .execute(
                "INSERT INTO builds (id, client, state, definition, output, had_credentials, created)
                 VALUES ('bad', 'c', 'queued', X'00', X'00', 0, 0)",
                [],
            )
            .unwrap();
        assert!(q.load_active().unwrap().is_empty());
        let row = q.get_build("bad").unwrap();
        assert!(row.is_none(), "still unreadable, so not returned");
        let state: String = q
            .conn
            .query_row("SELECT state FROM builds WHERE id='bad'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(state, "failed");
    }
}
