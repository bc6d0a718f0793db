//! Network faults under swarm: packet filters in each task's network namespace (the host's
//! `iptables`, entered with `nsenter`), as Jepsen cuts nodes off.
//!
//! Why not `docker network disconnect` as under compose: reconnecting a task's container to
//! its overlay network breaks the swarm's DNS for the other nodes (moby/moby#37376, seen here:
//! after a heal, nodes that were never cut could no longer resolve each other's names). Filters
//! leave every network and DNS record as swarm made them, and the runner still reaches a cut
//! node through its host-mode port (that traffic is not on the overlay network).
//!
//! The cuts in force are state of the runner, applied in full to every running node whenever
//! something changes (a cut, a heal, a node started again: a new task, a new address), into a
//! chain of its own that each application first empties.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::backend::BackendError;

/// The chain every rule goes in, jumped to from `INPUT` and `OUTPUT`.
const CHAIN: &str = "XPCHAOS";

/// A running node's task as the filters see it: its init process (whose network namespace
/// is the task's), its address on the overlay network, and the addresses of one-offs running
/// beside it (on its side of every cut).
#[derive(Clone, Debug)]
pub(super) struct Task {
    pub(super) pid: i64,
    pub(super) ip: String,
    pub(super) guests: Vec<String>,
}

/// The network faults in force.
#[derive(Clone, Debug, Default)]
pub(super) struct Cuts {
    isolated: BTreeSet<String>,
    /// The partition's groups (every node in one), when there is one.
    groups: Option<Vec<Vec<String>>>,
}

impl Cuts {
    pub(super) fn isolate(&mut self, node: &str) {
        self.isolated.insert(node.to_owned());
    }

    pub(super) fn heal(&mut self, node: &str) -> Result<(), BackendError> {
        if !self.isolated.remove(node) {
            return Err(BackendError::Command(format!("{node} is not isolated")));
        }
        Ok(())
    }

    pub(super) fn partition(&mut self, groups: &[Vec<String>]) -> Result<(), BackendError> {
        if self.groups.is_some() {
            return Err(BackendError::Command(
                "the cluster is already partitioned; add a `heal-partition` step first".into(),
            ));
        }
        self.groups = Some(groups.to_vec());
        Ok(())
    }

    pub(super) fn heal_partition(&mut self) -> Result<(), BackendError> {
        match self.groups.take() {
            Some(_) => Ok(()),
            None => Err(BackendError::Command("the cluster is not partitioned".into())),
        }
    }

    /// Whether any cut is in force (else a started node needs no rules).
    pub(super) fn any(&self) -> bool {
        !self.isolated.is_empty() || self.groups.is_some()
    }

    /// The nodes `node` may talk to under the cuts in force (itself included): none but
    /// itself when isolated; else the nodes of its partition group (every node when there is
    /// no partition) that are not isolated.
    fn side_of(&self, node: &str, all: &[String]) -> Vec<String> {
        if self.isolated.contains(node) {
            return vec![node.to_owned()];
        }
        let group = self
            .groups
            .as_ref()
            .and_then(|g| g.iter().find(|g| g.iter().any(|n| n == node)))
            .map(Vec::as_slice)
            .unwrap_or(all);
        group.iter().filter(|n| *n == node || !self.isolated.contains(*n)).cloned().collect()
    }

    /// `node`'s rules, as `iptables` arguments: with a cut in force, traffic to and from the
    /// running nodes of its side passes and the rest of the overlay `subnet` is dropped; with
    /// none, no rule. An allow-list and not a list of what to drop: a node that starts again is
    /// a new task at a new address, which every other side drops before the runner has written
    /// a rule naming it (with a drop-list, a returning member could reach the far side in that
    /// moment, and etcd's survivor would shut it down). `all` is every node of the profile.
    pub(super) fn rules(
        &self,
        node: &str,
        subnet: &str,
        tasks: &BTreeMap<String, Task>,
        all: &[String],
    ) -> Vec<Vec<String>> {
        if !self.any() {
            return Vec::new();
        }
        let rule = |flag: &str, addr: &str, target: &str| {
            vec!["-A".into(), CHAIN.into(), flag.into(), addr.into(), "-j".into(), target.into()]
        };
        let mut out = Vec::new();
        for mate in self.side_of(node, all) {
            let Some(t) = tasks.get(&mate) else { continue };
            if mate == node {
                // Itself, by its own address: every packet it sends has that source and every
                // packet it gets that destination, so only both at once.
                let mut own = rule("-s", &t.ip, "RETURN");
                own.splice(4..4, ["-d".to_owned(), t.ip.clone()]);
                out.push(own);
            } else {
                out.push(rule("-s", &t.ip, "RETURN"));
                out.push(rule("-d", &t.ip, "RETURN"));
            }
            for guest in &t.guests {
                out.push(rule("-s", guest, "RETURN"));
                out.push(rule("-d", guest, "RETURN"));
            }
        }
        out.push(rule("-s", subnet, "DROP"));
        out.push(rule("-d", subnet, "DROP"));
        out
    }
}

/// Runs `iptables <args>` in the network namespace of process `pid`.
async fn iptables(pid: i64, args: &[String]) -> Result<std::process::Output, BackendError> {
    let target = pid.to_string();
    let mut argv: Vec<&str> = vec!["-t", &target, "-n", "iptables", "-w", "5"];
    argv.extend(args.iter().map(String::as_str));
    let out = tokio::process::Command::new("nsenter")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), out).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(BackendError::Command(format!(
            "nsenter: {e}: network faults on swarm filter packets inside the task's network \
             namespace, with `nsenter` and `iptables` of the engine's host (util-linux, iptables)"
        ))),
        Err(_) => Err(BackendError::Timeout {
            after: Duration::from_secs(10),
            what: format!("running nsenter {}", argv.join(" ")),
        }),
    }
}

async fn iptables_ok(pid: i64, args: &[String]) -> Result<(), BackendError> {
    let out = iptables(pid, args).await?;
    if out.status.success() {
        return Ok(());
    }
    Err(BackendError::Command(format!(
        "nsenter -t {pid} -n iptables {}: {} (network faults on swarm need the runner to run as \
         root on the engine's host)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Replaces the rules of the task of `pid` with `rules`: the chain made (once) and jumped to
/// from `INPUT` and `OUTPUT`, emptied, filled.
pub(super) async fn apply(pid: i64, rules: &[Vec<String>]) -> Result<(), BackendError> {
    let s = |v: &[&str]| v.iter().map(|w| (*w).to_owned()).collect::<Vec<String>>();
    if !iptables(pid, &s(&["-n", "-L", CHAIN])).await?.status.success() {
        iptables_ok(pid, &s(&["-N", CHAIN])).await?;
    }
    for hook in ["INPUT", "OUTPUT"] {
        if !iptables(pid, &s(&["-C", hook, "-j", CHAIN])).await?.status.success() {
            iptables_ok(pid, &s(&["-I", hook, "-j", CHAIN])).await?;
        }
    }
    iptables_ok(pid, &s(&["-F", CHAIN])).await?;
    for r in rules {
        iptables_ok(pid, r).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> BTreeMap<String, Task> {
        [("n1", "10.0.1.2"), ("n2", "10.0.1.3"), ("n3", "10.0.1.4")]
            .into_iter()
            .map(|(n, ip)| (n.to_owned(), Task { pid: 1, ip: ip.to_owned(), guests: Vec::new() }))
            .collect()
    }

    fn shown(rules: Vec<Vec<String>>) -> Vec<String> {
        rules.into_iter().map(|r| r[2..].join(" ").replace(" -j", "")).collect()
    }

    #[test]
    fn each_node_talks_to_its_own_side_only() {
        let net = "10.0.1.0/24";
        let all: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let rules = |c: &Cuts, n: &str, t: &BTreeMap<String, Task>| shown(c.rules(n, net, t, &all));
        // What a node lets through, then the drops every cut node ends with.
        let expect = |pass: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = pass.iter().map(|p| p.to_string()).collect();
            v.push("-s 10.0.1.0/24 DROP".into());
            v.push("-d 10.0.1.0/24 DROP".into());
            v
        };
        let mut cuts = Cuts::default();
        assert!(!cuts.any());
        assert!(rules(&cuts, "n1", &tasks()).is_empty(), "no cut, no rule");

        cuts.isolate("n2");
        assert_eq!(rules(&cuts, "n2", &tasks()), expect(&["-s 10.0.1.3 -d 10.0.1.3 RETURN"]));
        assert_eq!(
            rules(&cuts, "n1", &tasks()),
            expect(&["-s 10.0.1.2 -d 10.0.1.2 RETURN", "-s 10.0.1.4 RETURN", "-d 10.0.1.4 RETURN"]),
            "the others drop the isolated node, whatever address it comes back with"
        );
        cuts.heal("n2").unwrap();
        assert!(cuts.heal("n2").is_err(), "healing twice is a scenario error");
        assert!(rules(&cuts, "n2", &tasks()).is_empty());

        let groups = vec![vec!["n1".to_owned()], vec!["n2".to_owned(), "n3".to_owned()]];
        cuts.partition(&groups).unwrap();
        assert!(cuts.partition(&groups).is_err());
        assert_eq!(rules(&cuts, "n1", &tasks()), expect(&["-s 10.0.1.2 -d 10.0.1.2 RETURN"]));
        assert_eq!(
            rules(&cuts, "n3", &tasks()),
            expect(&["-s 10.0.1.3 RETURN", "-d 10.0.1.3 RETURN", "-s 10.0.1.4 -d 10.0.1.4 RETURN"])
        );
        // A stopped node has no address: its side lets nothing of it through until it runs.
        let mut some = tasks();
        some.remove("n2");
        assert_eq!(rules(&cuts, "n3", &some), expect(&["-s 10.0.1.4 -d 10.0.1.4 RETURN"]));
        // A one-off beside n2 is on n2's side: n2 and n3 let it through, n1 does not.
        let mut with_guest = tasks();
        with_guest.get_mut("n2").unwrap().guests.push("10.0.1.9".into());
        assert_eq!(
            rules(&cuts, "n2", &with_guest),
            expect(&[
                "-s 10.0.1.3 -d 10.0.1.3 RETURN",
                "-s 10.0.1.9 RETURN",
                "-d 10.0.1.9 RETURN",
                "-s 10.0.1.4 RETURN",
                "-d 10.0.1.4 RETURN"
            ])
        );
        assert_eq!(
            rules(&cuts, "n3", &with_guest),
            expect(&[
                "-s 10.0.1.3 RETURN",
                "-d 10.0.1.3 RETURN",
                "-s 10.0.1.9 RETURN",
                "-d 10.0.1.9 RETURN",
                "-s 10.0.1.4 -d 10.0.1.4 RETURN"
            ])
        );
        assert_eq!(rules(&cuts, "n1", &with_guest), expect(&["-s 10.0.1.2 -d 10.0.1.2 RETURN"]));
        cuts.heal_partition().unwrap();
        assert!(!cuts.any());
        assert!(cuts.heal_partition().is_err());
    }
}
