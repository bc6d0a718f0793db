//! The actions a step may take, with their parameters, and what each does to the cluster.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{Dur, Selector};

/// One action.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Create and start the whole cluster and wait until every node answers.
    Up(Empty),
    /// Tear the whole cluster down (also done at the end of every run).
    Down(Empty),
    /// Graceful stop (SIGTERM, then SIGKILL after the timeout).
    Stop(Nodes),
    /// Send a signal (default SIGKILL).
    Kill(Kill),
    Start(Nodes),
    Restart(Nodes),
    /// Freeze the processes (SIGSTOP / cgroup freezer).
    Pause(Nodes),
    Unpause(Nodes),
    /// Cut the nodes off the cluster network.
    Isolate(Nodes),
    /// Reconnect isolated nodes with the same address and DNS alias.
    Heal(Nodes),
    /// Split the cluster network: nodes in different groups cannot reach each other, nodes in
    /// the same group can, and the runner still reaches every node.
    Partition(Partition),
    /// Undo the partition: every node back on the cluster network with its address and aliases.
    HealPartition(Empty),
    /// Erase a stopped node's data, as after a disk replacement.
    Wipe(Nodes),
    /// Run the profile's recovery command for a stopped node.
    Recover(Recover),
    /// Run any command of the node's image/binaries against the node's data and env file.
    Ops(Ops),
    /// Create a join token on `via`, run the profile's join command for `node`, start it
    /// (several nodes join one at a time, in order).
    Join(Join),
    /// Poll the info endpoint until every matcher holds on every selected node.
    Expect(Expect),
    /// Wait until every selected node's process exits by itself, its log saying why: a system
    /// that shuts down a member it learns was removed.
    ExpectDown(ExpectDown),
    /// Write keys through the KV API.
    Write(Write),
    /// Read keys back and compare.
    Read(Read),
    Sleep(Sleep),
    /// Start a background writer of unique keys through whichever node leads.
    WorkloadStart(WorkloadStart),
    /// Stop the background writer.
    WorkloadStop(Empty),
    /// Stop the writer if running, read back every write it attempted, count the lost ones.
    Verify(Verify),
    /// Inspect every stopped candidate and capture the most up-to-date one's name.
    ChooseSurvivor(ChooseSurvivor),
}

impl Step {
    /// The step's node selectors, by field name.
    pub fn selectors(&self) -> Vec<(&'static str, &Selector)> {
        let mut out = Vec::new();
        match self {
            Step::Stop(n)
            | Step::Start(n)
            | Step::Restart(n)
            | Step::Pause(n)
            | Step::Unpause(n)
            | Step::Isolate(n)
            | Step::Heal(n)
            | Step::Wipe(n) => out.push(("nodes", n.nodes.get_ref())),
            Step::ExpectDown(d) => out.push(("nodes", d.nodes.get_ref())),
            Step::Kill(k) => out.push(("nodes", k.nodes.get_ref())),
            Step::Recover(r) => out.push(("node", r.node.get_ref())),
            Step::Ops(o) => out.push(("node", o.node.get_ref())),
            Step::Join(j) => {
                out.push(("node", j.node.get_ref()));
                if let Some(v) = &j.via {
                    out.push(("via", v.get_ref()));
                }
            }
            Step::Expect(e) => {
                if let Some(n) = &e.nodes {
                    out.push(("nodes", n.get_ref()));
                }
            }
            Step::Write(w) => {
                if let Some(v) = &w.via {
                    out.push(("via", v.get_ref()));
                }
            }
            Step::Read(r) => {
                if let Some(v) = &r.via {
                    out.push(("via", v.get_ref()));
                }
            }
            Step::ChooseSurvivor(c) => {
                if let Some(a) = &c.among {
                    out.push(("among", a.get_ref()));
                }
            }
            Step::Partition(p) => out.extend(p.groups.iter().map(|g| ("group", g.get_ref()))),
            _ => {}
        }
        out
    }

    /// The step's action.
    pub fn kind(&self) -> Action {
        match self {
            Step::Up(_) => Action::Up,
            Step::Down(_) => Action::Down,
            Step::Stop(_) => Action::Stop,
            Step::Kill(_) => Action::Kill,
            Step::Start(_) => Action::Start,
            Step::Restart(_) => Action::Restart,
            Step::Pause(_) => Action::Pause,
            Step::Unpause(_) => Action::Unpause,
            Step::Isolate(_) => Action::Isolate,
            Step::Heal(_) => Action::Heal,
            Step::Partition(_) => Action::Partition,
            Step::HealPartition(_) => Action::HealPartition,
            Step::Wipe(_) => Action::Wipe,
            Step::Recover(_) => Action::Recover,
            Step::Ops(_) => Action::Ops,
            Step::Join(_) => Action::Join,
            Step::Expect(_) => Action::Expect,
            Step::ExpectDown(_) => Action::ExpectDown,
            Step::Write(_) => Action::Write,
            Step::Read(_) => Action::Read,
            Step::Sleep(_) => Action::Sleep,
            Step::WorkloadStart(_) => Action::WorkloadStart,
            Step::WorkloadStop(_) => Action::WorkloadStop,
            Step::Verify(_) => Action::Verify,
            Step::ChooseSurvivor(_) => Action::ChooseSurvivor,
        }
    }

    /// The action's name in a scenario file.
    pub fn action(&self) -> &'static str {
        self.kind().name()
    }
}

/// What a step does, without its parameters: the name it has in a scenario file. Backends
/// say which they cannot run ([`crate::backend::Backend::supports`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Up,
    Down,
    Stop,
    Kill,
    Start,
    Restart,
    Pause,
    Unpause,
    Isolate,
    Heal,
    Partition,
    HealPartition,
    Wipe,
    Recover,
    Ops,
    Join,
    Expect,
    ExpectDown,
    Write,
    Read,
    Sleep,
    WorkloadStart,
    WorkloadStop,
    Verify,
    ChooseSurvivor,
}

impl Action {
    pub const ALL: [Action; 25] = [
        Action::Up,
        Action::Down,
        Action::Stop,
        Action::Kill,
        Action::Start,
        Action::Restart,
        Action::Pause,
        Action::Unpause,
        Action::Isolate,
        Action::Heal,
        Action::Partition,
        Action::HealPartition,
        Action::Wipe,
        Action::Recover,
        Action::Ops,
        Action::Join,
        Action::Expect,
        Action::ExpectDown,
        Action::Write,
        Action::Read,
        Action::Sleep,
        Action::WorkloadStart,
        Action::WorkloadStop,
        Action::Verify,
        Action::ChooseSurvivor,
    ];

    /// The action's name in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            Action::Up => "up",
            Action::Down => "down",
            Action::Stop => "stop",
            Action::Kill => "kill",
            Action::Start => "start",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Isolate => "isolate",
            Action::Heal => "heal",
            Action::Partition => "partition",
            Action::HealPartition => "heal-partition",
            Action::Wipe => "wipe",
            Action::Recover => "recover",
            Action::Ops => "ops",
            Action::Join => "join",
            Action::Expect => "expect",
            Action::ExpectDown => "expect-down",
            Action::Write => "write",
            Action::Read => "read",
            Action::Sleep => "sleep",
            Action::WorkloadStart => "workload-start",
            Action::WorkloadStop => "workload-stop",
            Action::Verify => "verify",
            Action::ChooseSurvivor => "choose-survivor",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a step does to the cluster: how its recovery time is measured and whether the
/// timeline marks it. One answer per action, used by the engine's measurements and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Takes nodes away (stop, kill, pause, isolate): time to a leader among the others.
    Outage,
    /// Restarts nodes, which may lead again once back.
    Restart,
    /// A recovery command: measured from its end (the recovered node starts afterwards).
    Recovery,
    /// Changes the cluster without an outage of its own to measure (start, unpause, heal,
    /// wipe, join, partition, heal-partition): marked on the timeline only.
    Change,
}

impl FaultKind {
    /// Whether recovery times are measured after such a step.
    pub fn measured(self) -> bool {
        self != FaultKind::Change
    }
}

impl Step {
    /// What the step does to the cluster; `None` for steps that only observe or write data.
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            Step::Stop(_) | Step::Kill(_) | Step::Pause(_) | Step::Isolate(_) => {
                Some(FaultKind::Outage)
            }
            Step::Restart(_) => Some(FaultKind::Restart),
            Step::Recover(_) => Some(FaultKind::Recovery),
            Step::Start(_)
            | Step::Unpause(_)
            | Step::Heal(_)
            | Step::Wipe(_)
            | Step::Join(_)
            | Step::Partition(_)
            | Step::HealPartition(_) => Some(FaultKind::Change),
            Step::Up(_)
            | Step::Down(_)
            | Step::Ops(_)
            | Step::Expect(_)
            | Step::ExpectDown(_)
            | Step::Write(_)
            | Step::Read(_)
            | Step::Sleep(_)
            | Step::WorkloadStart(_)
            | Step::WorkloadStop(_)
            | Step::Verify(_)
            | Step::ChooseSurvivor(_) => None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    #[schemars(with = "Selector")]
    pub nodes: Spanned<Selector>,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Disjoint groups of nodes (selectors, resolved when the step runs). Nodes named in no
    /// group form one more group together.
    #[schemars(with = "Vec<Selector>")]
    pub groups: Vec<Spanned<Selector>>,
    /// Bound of resolving live selectors (`leader`, `any-follower`).
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    #[schemars(with = "Selector")]
    pub nodes: Spanned<Selector>,
    /// e.g. "SIGKILL" (default), "SIGTERM".
    #[schemars(with = "Option<String>")]
    pub signal: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    #[schemars(with = "Selector")]
    pub node: Spanned<Selector>,
    /// Extra arguments after the profile's recovery command.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub expect_exit: i64,
    #[serde(default)]
    pub stdout_contains: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    #[schemars(with = "Selector")]
    pub node: Spanned<Selector>,
    /// The command: its first word is a program of the profile's image.
    #[schemars(with = "Vec<String>")]
    pub run: Spanned<Vec<String>>,
    #[serde(default)]
    pub expect_exit: i64,
    #[serde(default)]
    pub stdout_contains: Vec<String>,
    #[serde(default)]
    pub stderr_contains: Vec<String>,
    pub timeout: Option<Dur>,
    /// Keep the command's standard output as a run artifact of this name.
    pub stdout_to: Option<String>,
    /// Put the artifact of this name into the node's data directory first; `{input}` in `run`
    /// becomes its path there.
    pub input: Option<String>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The (wiped, stopped) node that joins; several join one at a time, in order.
    #[schemars(with = "Selector")]
    pub node: Spanned<Selector>,
    /// Where the token is created (default `leader`).
    #[schemars(with = "Option<Selector>")]
    pub via: Option<Spanned<Selector>>,
    pub ttl_seconds: Option<u64>,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Default: `running`.
    #[schemars(with = "Option<Selector>")]
    pub nodes: Option<Spanned<Selector>>,
    pub timeout: Option<Dur>,
    /// Poll this JSON endpoint of each node instead of the info endpoint (e.g.
    /// a cluster-wide status page); its top-level fields are matched.
    pub path: Option<String>,
    /// Field name -> matcher.
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub that: BTreeMap<String, Spanned<toml::Value>>,
    /// Capture name -> field: saved from the first selected node once the expectation holds.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub capture: BTreeMap<String, Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectDown {
    #[schemars(with = "Selector")]
    pub nodes: Spanned<Selector>,
    pub timeout: Option<Dur>,
    /// Each node's log must say this (why it went down), in its last 200 lines: the proof
    /// that the node ran and stopped for the expected reason, not that it never started.
    pub log_contains: String,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// Default: `leader`.
    #[schemars(with = "Option<Selector>")]
    pub via: Option<Spanned<Selector>>,
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Also write `count` keys `<prefix>-<i>` (prefix default "key").
    #[serde(default)]
    pub count: u64,
    pub prefix: Option<String>,
    /// Pad each of the `count` values to this many bytes.
    pub value_bytes: Option<u64>,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Read {
    /// Default: `leader`. Each selected node is read through (followers redirect).
    #[schemars(with = "Option<Selector>")]
    pub via: Option<Spanned<Selector>>,
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Read back every key every earlier `write` step acknowledged.
    #[serde(default)]
    pub all_written: bool,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadStart {
    /// Writes per second (default 100); one write is in flight at a time.
    pub rate: Option<u64>,
    /// Key prefix (default "w").
    pub prefix: Option<String>,
    /// Writers running side by side, sharing `rate` (default 4).
    pub concurrency: Option<u64>,
    /// Start each write at the next running node in turn (following redirects), instead of at
    /// the node that acknowledged the last one: a stale leader, if any, receives writes too.
    #[serde(default)]
    pub spread: bool,
    /// Pad every value to this many bytes (default: short values like `v17`), to exercise
    /// large entries, appends and snapshots.
    pub value_bytes: Option<u64>,
    /// Also keep this many registers (keys `<prefix>reg-<i>`), each overwritten with an
    /// increasing counter by one writer, and read by as many readers through nodes taken in
    /// turn: the history the stale-read check runs on (default 0: none).
    pub registers: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChooseSurvivor {
    /// The candidates (default `stopped`); each must be stopped.
    #[schemars(with = "Option<Selector>")]
    pub among: Option<Spanned<Selector>>,
    /// Capture name for the chosen node's name.
    pub capture: String,
    /// Capture name for every other node of the cluster (a list of names): the nodes an
    /// operator wipes and rejoins after the recovery (`wipe`/`join` take it as a selector).
    pub others: Option<String>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Acknowledged writes the scenario accepts to lose (default 0).
    #[serde(default)]
    pub max_lost: u64,
    /// Fewest acknowledged writes for the check to mean something (default 1).
    pub min_acked: Option<u64>,
    /// Writes acknowledged by a stale cluster (a node of the generation a `recover` replaced)
    /// the scenario accepts: default 0, unbounded when the scenario sets `allow_split_brain`.
    pub max_stale_acked: Option<u64>,
    /// Writes acknowledged before a `recover` step began may be lost (a recovery from a
    /// survivor that held no majority): they are counted as `lost_before_recovery` (the RPO)
    /// and `max_lost` bounds only the others.
    #[serde(default)]
    pub recovery_may_lose: bool,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    pub duration: Dur,
}
