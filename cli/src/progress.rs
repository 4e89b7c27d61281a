//! Build progress in BuildKit's formats: `plain` (`#N [stage i/n] INSTR`,
//! streamed logs with elapsed seconds, `#N CACHED`, `#N DONE 0.3s`,
//! `#N ERROR: ...`), `quiet` (nothing), `rawjson` (one JSON object per
//! event) and `tty` (a live view; falls back to plain when stderr is no tty).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// The output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Line by line.
    Plain,
    /// Live view on a terminal.
    Tty,
    /// Nothing but errors.
    Quiet,
    /// JSON lines.
    RawJson,
}

impl Mode {
    /// `--progress` value → mode (`auto` = tty when stderr is a terminal).
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => {
                if std::io::stderr().is_terminal() {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
            "tty" => Mode::Tty,
            "plain" => Mode::Plain,
            "quiet" => Mode::Quiet,
            "rawjson" => Mode::RawJson,
            other => {
                return Err(format!(
                    "invalid --progress {other:?}: use auto, tty, plain, quiet or rawjson"
                ))
            }
        })
    }
}

struct Step {
    number: usize,
    started: Instant,
    tail: Vec<String>,
    partial: Vec<u8>,
}

/// The printer. Steps are identified by any string key (the vertex key).
pub struct Progress {
    mode: Mode,
    out: Box<dyn Write + Send>,
    steps: HashMap<String, Step>,
    next: usize,
    build_start: Instant,
    bar: Option<indicatif::ProgressBar>,
}

const TAIL_LINES: usize = 20;

impl Progress {
    /// A printer writing to stderr.
    pub fn new(mode: Mode) -> Self {
        let bar = (mode == Mode::Tty).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Self {
            mode,
            out: Box::new(std::io::stderr()),
            steps: HashMap::new(),
            next: 1,
            build_start: Instant::now(),
            bar,
        }
    }

    fn line(&mut self, s: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(s),
            (None, Mode::Plain) => {
                let _ = writeln!(self.out, "{s}");
            }
            _ => {}
        }
    }

    fn json(&mut self, v: serde_json::Value) {
        if self.mode == Mode::RawJson {
            let _ = writeln!(self.out, "{v}");
        }
    }

    fn number(&mut self, key: &str) -> usize {
        if let Some(s) = self.steps.get(key) {
            return s.number;
        }
        let n = self.next;
        self.next += 1;
        self.steps.insert(
            key.to_string(),
            Step {
                number: n,
                started: Instant::now(),
                tail: Vec::new(),
                partial: Vec::new(),
            },
        );
        n
    }

    /// A step that needs no work.
    pub fn cached(&mut self, key: &str, name: &str) {
        let n = self.number(key);
        self.line(&format!("#{n} {name}\n#{n} CACHED\n"));
        self.json(serde_json::json!({"vertex": key, "name": name, "cached": true}));
    }

    /// A step starts.
    pub fn started(&mut self, key: &str, name: &str) {
        let n = self.number(key);
        if let Some(s) = self.steps.get_mut(key) {
            s.started = Instant::now();
        }
        if let Some(b) = &self.bar {
            b.set_message(format!("#{n} {name}"));
        }
        self.line(&format!("#{n} {name}"));
        self.json(serde_json::json!({"vertex": key, "name": name, "started": true}));
    }

    /// Output of a running step; complete lines are printed with the
    /// seconds since the step started.
    pub fn log(&mut self, key: &str, bytes: &[u8]) {
        let n = self.number(key);
        let mut lines = Vec::new();
        if let Some(s) = self.steps.get_mut(key) {
            s.partial.extend_from_slice(bytes);
            while let Some(i) = s.partial.iter().position(|b| *b == b'\n') {
                let l: Vec<u8> = s.partial.drain(..=i).collect();
                let text = String::from_utf8_lossy(&l[..l.len() - 1]).into_owned();
                s.tail.push(text.clone());
                if s.tail.len() > TAIL_LINES {
                    s.tail.remove(0);
                }
                lines.push((s.started.elapsed().as_secs_f64(), text));
            }
        }
        for (t, text) in lines {
            self.line(&format!("#{n} {t:.3} {text}"));
            self.json(serde_json::json!({"vertex": key, "log": text}));
        }
    }

    /// A step finished.
    pub fn done(&mut self, key: &str) {
        let n = self.number(key);
        let secs = self
            .steps
            .get(key)
            .map_or(0.0, |s| s.started.elapsed().as_secs_f64());
        self.flush_partial(key);
        self.line(&format!("#{n} DONE {secs:.1}s\n"));
        self.json(serde_json::json!({"vertex": key, "completed": true, "seconds": secs}));
    }

    fn flush_partial(&mut self, key: &str) {
        if self.steps.get(key).is_some_and(|s| !s.partial.is_empty()) {
            self.log(key, b"\n");
        }
    }

    /// A step failed.
    pub fn failed(&mut self, key: &str, error: &str) {
        let n = self.number(key);
        self.flush_partial(key);
        let first = error.lines().next().unwrap_or("");
        self.line(&format!("#{n} ERROR: {first}\n"));
        self.json(serde_json::json!({"vertex": key, "error": error}));
    }

    /// Last lines of a step's output.
    pub fn tail(&self, key: &str) -> Vec<String> {
        self.steps
            .get(key)
            .map(|s| s.tail.clone())
            .unwrap_or_default()
    }

    /// A free-form line (exporting, naming).
    pub fn note(&mut self, text: &str) {
        let n = self.next;
        self.next += 1;
        let secs = self.build_start.elapsed().as_secs_f64();
        self.line(&format!("#{n} {text}\n#{n} DONE {secs:.1}s\n"));
        self.json(serde_json::json!({"note": text}));
    }

    /// A fact about the whole build that the user may need later (the
    /// farm's build id, to re-attach): `label: value` in every text mode,
    /// quiet included, and `{"<json_key>": value}` in rawjson.
    pub fn fact(&mut self, label: &str, json_key: &str, value: &str) {
        match self.mode {
            Mode::RawJson => self.json(serde_json::json!({ json_key: value })),
            Mode::Quiet => {
                let _ = writeln!(self.out, "{label}: {value}");
            }
            _ => self.line(&format!("{label}: {value}")),
        }
    }

    /// Stop the live view.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn printed(mode: Mode) -> String {
        let buf = Buf::default();
        let mut p = Progress::new(mode);
        p.out = Box::new(buf.clone());
        p.fact("build id", "farm_build_id", "b-1");
        p.started("k", "[1/1] RUN x (worker arm1, emulated)");
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_build_id_is_printed_in_every_mode() {
        assert_eq!(
            printed(Mode::Plain),
            "build id: b-1\n#1 [1/1] RUN x (worker arm1, emulated)\n"
        );
        assert_eq!(printed(Mode::Quiet), "build id: b-1\n");
        let json = printed(Mode::RawJson);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["farm_build_id"], "b-1");
    }
}
