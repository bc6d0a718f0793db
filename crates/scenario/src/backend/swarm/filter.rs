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

/// Runs `program <args>` (`iptables` or `iptables-restore`) in the network namespace of
/// process `pid`, with `input` on its standard input.
async fn nsenter(
    pid: i64,
    program: &str,
    args: &[String],
    input: Option<&str>,
) -> Result<std::process::Output, BackendError> {
    use tokio::io::AsyncWriteExt;
    let target = pid.to_string();
    let mut argv: Vec<&str> = vec!["-t", &target, "-n", program, "-w", "5"];
    argv.extend(args.iter().map(String::as_str));
    let shown = || format!("nsenter {}", argv.join(" "));
    let missing = |e: std::io::Error| {
        BackendError::Command(format!(
            "nsenter: {e}: network faults on swarm filter packets inside the task's network \
             namespace, with `nsenter` and `iptables` of the engine's host (util-linux, iptables)"
        ))
    };
    let run = async {
        let mut child = tokio::process::Command::new("nsenter")
            .args(&argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(missing)?;
        let mut stdin = child.stdin.take().expect("piped");
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).await.map_err(missing)?;
        }
        drop(stdin);
        child.wait_with_output().await.map_err(missing)
    };
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(out) => out,
        Err(_) => Err(BackendError::Timeout { after: Duration::from_secs(10), what: shown() }),
    }
}

async fn nsenter_ok(
    pid: i64,
    program: &str,
    args: &[String],
    input: Option<&str>,
) -> Result<(), BackendError> {
    let out = nsenter(pid, program, args, input).await?;
    if out.status.success() {
        return Ok(());
    }
    Err(BackendError::Command(format!(
        "nsenter -t {pid} -n {program} {}: {} (network faults on swarm need the runner to run as \
         root on the engine's host)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The input of `iptables-restore --noflush` that replaces the chain's rules with `rules` in
/// one transaction (the chain made if it is not there).
fn restore_text(rules: &[Vec<String>]) -> String {
    let mut text = format!("*filter\n:{CHAIN} - [0:0]\n-F {CHAIN}\n");
    for r in rules {
        text.push_str(&r.join(" "));
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// Replaces the rules of the task of `pid` with `rules`, all at once: a node under a cut never
/// passes everything while its rules are rebuilt (emptying the chain and then adding one rule
/// per call left it open for tens of milliseconds, each time). Then the chain is jumped to
/// from `INPUT` and `OUTPUT`, once.
pub(super) async fn apply(pid: i64, rules: &[Vec<String>]) -> Result<(), BackendError> {
    nsenter_ok(pid, "iptables-restore", &["--noflush".to_owned()], Some(&restore_text(rules)))
        .await?;
    for hook in ["INPUT", "OUTPUT"] {
        let args = |op: &str| [op, hook, "-j", CHAIN].map(str::to_owned).to_vec();
        if !nsenter(pid, "iptables", &args("-C"), None).await?.status.success() {
            nsenter_ok(pid, "iptables", &args("-I"), None).await?;
        }
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
    fn a_rebuild_is_one_transaction_that_empties_the_chain_first() {
        let rules = vec![
            ["-A", CHAIN, "-s", "10.0.1.3", "-j", "RETURN"].map(String::from).to_vec(),
            ["-A", CHAIN, "-s", "10.0.1.0/24", "-j", "DROP"].map(String::from).to_vec(),
        ];
        assert_eq!(
            restore_text(&rules),
            "*filter\n:XPCHAOS - [0:0]\n-F XPCHAOS\n-A XPCHAOS -s 10.0.1.3 -j RETURN\n\
             -A XPCHAOS -s 10.0.1.0/24 -j DROP\nCOMMIT\n"
        );
        assert_eq!(restore_text(&[]), "*filter\n:XPCHAOS - [0:0]\n-F XPCHAOS\nCOMMIT\n");
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
