//! The default seccomp profile of a RUN step: Docker's, compiled to BPF with `seccompiler`.
//!
//! `default.json` is moby's default profile, unmodified: moby/moby commit
//! `b985e2313a8676e18072b442911fc8f64f17d440`, file
//! `vendor/github.com/moby/profiles/seccomp/default.json` (module
//! `github.com/moby/profiles/seccomp` v0.2.3; it was `profiles/seccomp/default.json` in moby
//! before July 2025). To update it, copy the new file over and run the unit tests.
//!
//! [`resolve`] evaluates it as moby's `setupSeccomp` (`profiles/seccomp/seccomp_linux.go`)
//! does for one architecture, capability set and kernel: a block of syscalls applies when
//! none of its `excludes` holds (`arches`: the architecture is listed; `caps`: one listed
//! capability is held; `minKernel`: the kernel is at least that) and all its `includes` hold
//! (`arches`: the architecture is listed; `caps`: every listed capability is held;
//! `minKernel`: the kernel is at least that). Names this architecture's table
//! ([`syscalls`], seccompiler's own tables) does not know are skipped and logged at debug,
//! as libseccomp skips them for Docker. Everything not allowed fails with the profile's
//! `defaultErrnoRet` (EPERM).
//!
//! One amendment of ours: `socket(AF_PACKET, …)` is refused too (`deny_packet_sockets`), so
//! that a step's `CAP_NET_RAW` cannot hand link-layer frames past its routing table to pasta.
//!
//! [`compile`] turns the result into BPF. A seccompiler filter has one action on match and
//! one on mismatch, so the profile becomes a stack of filters, which the kernel evaluates
//! all, keeping the most restrictive answer (seccomp(2), "the return value … with the
//! highest precedence"):
//! 1. every syscall any block names (with its argument rules) → allow, else the default
//!    errno;
//! 2. per other errno `n` (only `clone3` → ENOSYS, for the glibc fallback to `clone`): those
//!    syscalls → errno `n`, else allow.
//!
//! Architectures: the filter is the host's (x86_64 or aarch64), also for steps run under
//! qemu-user, whose syscalls are the host's. seccompiler's arch check kills a process that
//! makes a syscall of any other audit architecture, so moby's `archMap` sub-architectures
//! (x86 and x32 on x86_64, arm on aarch64) are blocked, where Docker filters them with the
//! same list. So that the 32-bit platforms the host runs natively (linux/386 on amd64,
//! linux/arm/v7 on arm64) still build, the solver runs their steps under qemu in a private
//! binfmt_misc instance when seccomp is on ([`crate::emulation::under_seccomp`]); the
//! executor refuses such a step run natively with a message rather than a SIGSYS.
//!
//! The program is compiled once per worker process ([`default_programs`]) and handed to the
//! helper in its request; the container's pid 1 installs it as the last step before exec
//! (see `setup::exec_process`).

pub mod syscalls;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::Deserialize;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// moby's default profile, as shipped (see the module docs for its origin).
pub const DEFAULT_PROFILE_JSON: &str = include_str!("default.json");

/// A syscall architecture with a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86_64 (amd64).
    X86_64,
    /// aarch64 (arm64).
    Aarch64,
}

impl Arch {
    /// The architecture this worker was built for, when it has a table.
    pub fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The name moby's profile uses in `arches` (Go's GOARCH).
    pub fn goarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    fn table(self) -> &'static [(&'static str, i64)] {
        match self {
            Arch::X86_64 => syscalls::X86_64,
            Arch::Aarch64 => syscalls::AARCH64,
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    /// The number of syscall `name` on this architecture.
    pub fn syscall_nr(self, name: &str) -> Option<i64> {
        let t = self.table();
        t.binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| t[i].1)
    }
}

/// Why the profile could not be turned into a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// The profile JSON does not parse.
    #[error("the seccomp profile does not parse: {0}")]
    Parse(String),
    /// The profile uses something this compiler does not implement.
    #[error("the seccomp profile uses {0}, which imgfarm does not support")]
    Unsupported(String),
    /// The worker's architecture has no syscall table.
    #[error("no seccomp syscall table for this architecture ({0})")]
    NoTable(&'static str),
    /// seccompiler refused the filter.
    #[error("compiling the seccomp filter: {0}")]
    Compile(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    syscalls: Vec<Block>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Block {
    names: Vec<String>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// What a matching syscall gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Runs.
    Allow,
    /// Fails with this errno.
    Errno(u32),
}

/// One argument comparison (libseccomp's `SCMP_CMP_*`, on the whole 64-bit argument as
/// libseccomp does on 64-bit architectures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCmp {
    /// Argument index (0-5).
    pub index: u8,
    /// The comparison.
    pub op: CmpOp,
}

/// A comparison of an argument with constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq(u64),
    /// `!=`.
    Ne(u64),
    /// `<`.
    Lt(u64),
    /// `<=`.
    Le(u64),
    /// `>`.
    Gt(u64),
    /// `>=`.
    Ge(u64),
    /// `arg & mask == value`.
    MaskedEq {
        /// Mask.
        mask: u64,
        /// Expected value.
        value: u64,
    },
}

/// When a syscall matches: always (`None`), or when any of the rules holds (each rule is
/// its comparisons AND'ed).
pub type Match = Option<Vec<Vec<ArgCmp>>>;

/// The profile evaluated for one architecture, capability set and kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The architecture.
    pub arch: Arch,
    /// Per action, the syscalls (by number) it applies to, and when.
    pub actions: BTreeMap<Action, BTreeMap<i64, Match>>,
    /// The errno of everything else.
    pub default_errno: u32,
    /// Names the profile lists for this architecture that its table does not know.
    pub skipped: Vec<String>,
}

impl Resolved {
    /// The rule of syscall `name` under `action`, if any.
    pub fn rule(&self, action: Action, name: &str) -> Option<&Match> {
        let nr = self.arch.syscall_nr(name)?;
        self.actions.get(&action)?.get(&nr)
    }

    /// Whether `name` is allowed with no argument condition.
    pub fn allows_always(&self, name: &str) -> bool {
        matches!(self.rule(Action::Allow, name), Some(None))
    }
}

/// Linux capability names, by number (`include/uapi/linux/capability.h`).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every capability Linux defines (through CAP_CHECKPOINT_RESTORE).
pub const ALL_CAPS: u64 = (1 << CAP_NAMES.len()) - 1;

fn has_cap(caps: u64, name: &str) -> bool {
    CAP_NAMES
        .iter()
        .position(|n| *n == name)
        .is_some_and(|i| caps & (1 << i) != 0)
}

/// `"4.8"` → `(4, 8)`; also takes a kernel release such as `6.18.44-fc`.
pub fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().unwrap_or("0").parse().unwrap_or(0);
    Some((major, minor))
}

fn kernel_at_least(kernel: (u32, u32), min: &str) -> Result<bool, SeccompError> {
    let m =
        parse_kernel(min).ok_or_else(|| SeccompError::Unsupported(format!("minKernel {min:?}")))?;
    Ok(kernel >= m)
}

fn parse_action(action: &str, errno: Option<u32>) -> Result<Action, SeccompError> {
    match action {
        "SCMP_ACT_ALLOW" => Ok(Action::Allow),
        "SCMP_ACT_ERRNO" => Ok(Action::Errno(errno.unwrap_or(libc::EPERM as u32))),
        other => Err(SeccompError::Unsupported(format!("action {other}"))),
    }
}

fn parse_arg(a: &Arg) -> Result<ArgCmp, SeccompError> {
    let op = match a.op.as_str() {
        "SCMP_CMP_EQ" => CmpOp::Eq(a.value),
        "SCMP_CMP_NE" => CmpOp::Ne(a.value),
        "SCMP_CMP_LT" => CmpOp::Lt(a.value),
        "SCMP_CMP_LE" => CmpOp::Le(a.value),
        "SCMP_CMP_GT" => CmpOp::Gt(a.value),
        "SCMP_CMP_GE" => CmpOp::Ge(a.value),
        // libseccomp: (arg & datum_a) == datum_b; moby: value, valueTwo.
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq {
            mask: a.value,
            value: a.value_two,
        },
        other => return Err(SeccompError::Unsupported(format!("comparison {other}"))),
    };
    if a.index > 5 {
        return Err(SeccompError::Unsupported(format!(
            "argument index {}",
            a.index
        )));
    }
    Ok(ArgCmp { index: a.index, op })
}

/// Whether moby applies `b` for this architecture, capability set and kernel.
fn applies(b: &Block, arch: Arch, caps: u64, kernel: (u32, u32)) -> Result<bool, SeccompError> {
    let ex = &b.excludes;
    if ex
        .arches
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == arch.goarch()))
    {
        return Ok(false);
    }
    if ex
        .caps
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| has_cap(caps, c)))
    {
        return Ok(false);
    }
    if let Some(k) = &ex.min_kernel {
        if kernel_at_least(kernel, k)? {
            return Ok(false);
        }
    }
    let inc = &b.includes;
    if inc
        .arches
        .as_ref()
        .is_some_and(|a| !a.iter().any(|a| a == arch.goarch()))
    {
        return Ok(false);
    }
    if inc
        .caps
        .as_ref()
        .is_some_and(|c| !c.iter().all(|c| has_cap(caps, c)))
    {
        return Ok(false);
    }
    if let Some(k) = &inc.min_kernel {
        if !kernel_at_least(kernel, k)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Evaluate profile `json` for `arch`, the step's capability set `caps` (bits by capability
/// number) and the running kernel `(major, minor)`.
pub fn resolve(
    json: &str,
    arch: Arch,
    caps: u64,
    kernel: (u32, u32),
) -> Result<Resolved, SeccompError> {
    let p: Profile = serde_json::from_str(json).map_err(|e| SeccompError::Parse(e.to_string()))?;
    let default_errno = match parse_action(&p.default_action, p.default_errno_ret)? {
        Action::Errno(e) => e,
        Action::Allow => {
            return Err(SeccompError::Unsupported(
                "an allowing default action".into(),
            ))
        }
    };
    let mut actions: BTreeMap<Action, BTreeMap<i64, Match>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for b in &p.syscalls {
        if !applies(b, arch, caps, kernel)? {
            continue;
        }
        let action = parse_action(&b.action, b.errno_ret)?;
        let cmps = b
            .args
            .iter()
            .flatten()
            .map(parse_arg)
            .collect::<Result<Vec<_>, _>>()?;
        for name in &b.names {
            let Some(nr) = arch.syscall_nr(name) else {
                tracing::debug!(
                    syscall = %name,
                    arch = arch.goarch(),
                    "seccomp profile: syscall unknown on this architecture, skipped"
                );
                if !skipped.contains(name) {
                    skipped.push(name.clone());
                }
                continue;
            };
            // Unconditional wins over any argument rule.
            match (
                actions.entry(action).or_default().entry(nr),
                cmps.is_empty(),
            ) {
                (Entry::Vacant(v), true) => {
                    v.insert(None);
                }
                (Entry::Vacant(v), false) => {
                    v.insert(Some(vec![cmps.clone()]));
                }
                (Entry::Occupied(mut o), true) => {
                    o.insert(None);
                }
                (Entry::Occupied(mut o), false) => {
                    if let Some(rules) = o.get_mut() {
                        rules.push(cmps.clone());
                    }
                }
            }
        }
    }
    deny_packet_sockets(arch, &mut actions);
    Ok(Resolved {
        arch,
        actions,
        default_errno,
        skipped,
    })
}

/// `AF_PACKET` (`include/linux/socket.h`).
pub const AF_PACKET: u64 = 17;

/// imgfarm's one change to Docker's profile: `socket(AF_PACKET, …)` is refused.
///
/// A step keeps Docker's `CAP_NET_RAW`, and in its own network namespace a packet socket
/// would hand pasta frames that never met the step's routing table, and with it the
/// `unreachable` routes that keep cloud metadata (169.254.0.0/16) out of reach
/// (`executor/network.rs`). Raw IP sockets (`AF_INET`, `SOCK_RAW`, which `ping` uses) are
/// routed and stay allowed; only link-layer frames (tcpdump, DHCP clients) are lost.
fn deny_packet_sockets(arch: Arch, actions: &mut BTreeMap<Action, BTreeMap<i64, Match>>) {
    let Some(nr) = arch.syscall_nr("socket") else {
        return;
    };
    let Some(rule) = actions.get_mut(&Action::Allow).and_then(|m| m.get_mut(&nr)) else {
        return;
    };
    let not_packet = |r: &[ArgCmp]| -> Vec<Vec<ArgCmp>> {
        let lt = |v| ArgCmp {
            index: 0,
            op: CmpOp::Lt(v),
        };
        match r {
            [ArgCmp {
                index: 0,
                op: CmpOp::Lt(v),
            }] if *v > AF_PACKET => vec![
                vec![lt(AF_PACKET)],
                vec![
                    ArgCmp {
                        index: 0,
                        op: CmpOp::Gt(AF_PACKET),
                    },
                    lt(*v),
                ],
            ],
            [ArgCmp {
                index: 0,
                op: CmpOp::Eq(AF_PACKET),
            }] => vec![],
            other => vec![other.to_vec()],
        }
    };
    *rule = Some(match rule.take() {
        None => vec![vec![ArgCmp {
            index: 0,
            op: CmpOp::Ne(AF_PACKET),
        }]],
        Some(rules) => rules.iter().flat_map(|r| not_packet(r)).collect(),
    });
}

fn condition(c: &ArgCmp) -> Result<SeccompCondition, SeccompError> {
    let (op, v) = match c.op {
        CmpOp::Eq(v) => (SeccompCmpOp::Eq, v),
        CmpOp::Ne(v) => (SeccompCmpOp::Ne, v),
        CmpOp::Lt(v) => (SeccompCmpOp::Lt, v),
        CmpOp::Le(v) => (SeccompCmpOp::Le, v),
        CmpOp::Gt(v) => (SeccompCmpOp::Gt, v),
        CmpOp::Ge(v) => (SeccompCmpOp::Ge, v),
        CmpOp::MaskedEq { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
    };
    SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, op, v)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

fn rules(syscalls: &BTreeMap<i64, Match>) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut out = BTreeMap::new();
    for (nr, m) in syscalls {
        let rs = match m {
            None => Vec::new(),
            Some(rules) => rules
                .iter()
                .map(|r| {
                    let conds = r.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
                    SeccompRule::new(conds).map_err(|e| SeccompError::Compile(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        out.insert(*nr, rs);
    }
    Ok(out)
}

/// Compile `r` into the stack of BPF programs described in the module docs, to install
/// in order.
pub fn compile(r: &Resolved) -> Result<Vec<BpfProgram>, SeccompError> {
    let filter = |set: &BTreeMap<i64, Match>,
                  mismatch: SeccompAction,
                  matched: SeccompAction|
     -> Result<BpfProgram, SeccompError> {
        let f = SeccompFilter::new(rules(set)?, mismatch, matched, r.arch.target())
            .map_err(|e| SeccompError::Compile(e.to_string()))?;
        BpfProgram::try_from(f).map_err(|e| SeccompError::Compile(e.to_string()))
    };
    // 1: what any block names → allow (its own errno then comes from filter 2).
    let mut named: BTreeMap<i64, Match> = BTreeMap::new();
    for set in r.actions.values() {
        for (nr, m) in set {
            match named.entry(*nr) {
                Entry::Vacant(v) => {
                    v.insert(m.clone());
                }
                Entry::Occupied(mut o) => match (o.get_mut(), m) {
                    (slot, None) => *slot = None,
                    (Some(rules), Some(more)) => rules.extend(more.iter().cloned()),
                    (None, Some(_)) => {}
                },
            }
        }
    }
    let mut progs = vec![filter(
        &named,
        SeccompAction::Errno(r.default_errno),
        SeccompAction::Allow,
    )?];
    // 2: each other errno.
    for (action, set) in &r.actions {
        if let Action::Errno(n) = action {
            progs.push(filter(set, SeccompAction::Allow, SeccompAction::Errno(*n))?);
        }
    }
    Ok(progs)
}

/// One BPF instruction as a `u64` (code, jt, jf, k from the low bits up), to carry a
/// program in the helper's JSON request.
pub fn encode(p: &[sock_filter]) -> Vec<u64> {
    p.iter()
        .map(|i| {
            (i.code as u64) | ((i.jt as u64) << 16) | ((i.jf as u64) << 24) | ((i.k as u64) << 32)
        })
        .collect()
}

/// The inverse of [`encode`].
pub fn decode(p: &[u64]) -> BpfProgram {
    p.iter()
        .map(|v| sock_filter {
            code: *v as u16,
            jt: (*v >> 16) as u8,
            jf: (*v >> 24) as u8,
            k: (*v >> 32) as u32,
        })
        .collect()
}

/// The running kernel's `(major, minor)`, `(0, 0)` when unknown (then no `minKernel`
/// block applies).
pub fn running_kernel() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| parse_kernel(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

/// Programs to install in order, each encoded by [`encode`].
pub type Programs = Arc<Vec<Vec<u64>>>;

/// The default profile's [`Programs`] for this worker's architecture and the step
/// capability set `caps`, compiled once per process.
pub fn default_programs(caps: u64) -> Result<Programs, SeccompError> {
    static CACHE: Mutex<Vec<(u64, Programs)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = cache.iter().find(|(c, _)| *c == caps) {
        return Ok(p.clone());
    }
    let arch = Arch::host().ok_or(SeccompError::NoTable(std::env::consts::ARCH))?;
    let t0 = std::time::Instant::now();
    let r = resolve(DEFAULT_PROFILE_JSON, arch, caps, running_kernel())?;
    let progs: Vec<Vec<u64>> = compile(&r)?.iter().map(|p| encode(p)).collect();
    tracing::debug!(
        arch = arch.goarch(),
        programs = progs.len(),
        instructions = progs.iter().map(Vec::len).sum::<usize>(),
        skipped = r.skipped.len(),
        took_us = t0.elapsed().as_micros() as u64,
        "seccomp profile compiled"
    );
    let p = Arc::new(progs);
    cache.push((caps, p.clone()));
    Ok(p)
}

#[cfg(test)]
mod tests;
