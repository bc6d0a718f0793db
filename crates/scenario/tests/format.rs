//! Parser tests: each case is a scenario text and the exact rendered error (or success).

use std::path::{Path, PathBuf};

use scenario::model::{Matcher, Step};
use scenario::parse::parse;
use scenario::profile::Profile;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn profile() -> Profile {
    Profile::load(&Profile::path_for(&root(), "xp-3")).unwrap()
}

const HEAD: &str = "name = \"t\"\nsummary = \"s\"\n";

#[test]
fn every_step_kind_parses() {
    let src = format!(
        "{HEAD}cluster = \"xp-3\"\nallow_split_brain = true\n[defaults]\ntimeout = \"5s\"\n\
[[step]]\nup = {{}}\n\
[[step]]\nexpect = {{ nodes = \"all\", that = {{ role = {{ one_of = [\"leader\", \"follower\"] }}, leader_id = {{ same = true }}, cluster_id = {{ not_empty = true }}, term = {{ ge = 1 }}, voters = {{ len = 3 }}, learners = [] }}, capture = {{ first = \"node_name\" }} }}\n\
[[step]]\nwrite = {{ keys = {{ a = \"1\" }}, count = 2, prefix = \"p\" }}\n\
[[step]]\nread = {{ via = [\"node1\", \"${{first}}\"], all_written = true }}\n\
[[step]]\nstop = {{ nodes = [\"leader\", \"any-follower\"], timeout = \"2s\" }}\n\
[[step]]\nkill = {{ nodes = \"followers\", signal = \"SIGTERM\" }}\n\
[[step]]\nstart = {{ nodes = \"all\" }}\n\
[[step]]\nrestart = {{ nodes = \"node2\" }}\n\
[[step]]\npause = {{ nodes = \"node3\" }}\n\
[[step]]\nunpause = {{ nodes = \"node3\" }}\n\
[[step]]\nisolate = {{ nodes = \"leader\" }}\n\
[[step]]\nheal = {{ nodes = \"node1\" }}\n\
[[step]]\npartition = {{ groups = [[\"leader\", \"any-follower\"], [\"node3\"]], timeout = \"2s\" }}\n\
[[step]]\nheal-partition = {{}}\n\
[[step]]\nwipe = {{ nodes = \"${{first}}\" }}\n\
[[step]]\nrecover = {{ node = \"node1\", args = [\"--no-backup\"], stdout_contains = [\"recovered\"] }}\n\
[[step]]\nops = {{ node = \"node1\", run = [\"xp-ops\", \"xp\", \"inspect\", \"--json\"], expect_exit = 0, stdout_contains = [\"vote\"] }}\n\
[[step]]\njoin = {{ node = \"node2\", via = \"${{first}}\", ttl_seconds = 60 }}\n\
[[step]]\nexpect = {{ nodes = \"node2\", that = {{ leader_api_base_url = \"${{first.api_base_url}}\", voters = {{ contains = \"${{self.node_id}}\" }}, node_id = {{ ne = 0 }}, term = {{ lt = 99 }} }} }}\n\
[[step]]\nsleep = {{ duration = \"10ms\" }}\n\
[[step]]\nworkload-start = {{ rate = 50, concurrency = 2, prefix = \"w\", spread = true }}\n\
[[step]]\nworkload-stop = {{}}\n\
[[step]]\nchoose-survivor = {{ among = \"stopped\", capture = \"s\" }}\n\
[[step]]\nrecover = {{ node = \"${{s}}\" }}\n\
[[step]]\nverify = {{ max_lost = 2, min_acked = 10, max_stale_acked = 5, timeout = \"9s\" }}\n\
[[step]]\ndown = {{}}\n"
    );
    let s = parse(Path::new("t.toml"), &src, &profile()).unwrap();
    let actions: Vec<&str> = s.steps.iter().map(|p| p.step.action()).collect();
    assert_eq!(
        actions,
        [
            "up",
            "expect",
            "write",
            "read",
            "stop",
            "kill",
            "start",
            "restart",
            "pause",
            "unpause",
            "isolate",
            "heal",
            "partition",
            "heal-partition",
            "wipe",
            "recover",
            "ops",
            "join",
            "expect",
            "sleep",
            "workload-start",
            "workload-stop",
            "choose-survivor",
            "recover",
            "verify",
            "down"
        ]
    );
    assert_eq!(s.default_timeout(), std::time::Duration::from_secs(5));
    assert_eq!(s.steps[1].line, 9, "the line of the step's [[step]] header");
    assert!(s.allow_split_brain);
    assert!(s.steps.iter().any(|p| matches!(&p.step, Step::WorkloadStart(w) if w.spread)));
    assert!(s
        .steps
        .iter()
        .any(|p| matches!(&p.step, Step::Verify(v) if v.max_stale_acked == Some(5))));
    assert!(s.steps.iter().any(|p| matches!(&p.step, Step::Partition(g) if g.groups.len() == 2)));
    assert!(s.steps[1].matchers.contains(&("voters".to_string(), Matcher::Len(3))));
    assert!(s.steps[1]
        .matchers
        .contains(&("learners".to_string(), Matcher::Eq(serde_json::json!([])))));
    assert!(
        matches!(&s.steps[4].step, Step::Stop(n) if n.timeout.unwrap().0 == std::time::Duration::from_secs(2))
    );
}

#[test]
fn rejections_name_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("[[step]]\nstp = {}\n", "t.toml:4:1: unknown variant `stp`, expected one of `up`, `down`, `stop`, `kill`, `start`, `restart`, `pause`, `unpause`, `isolate`, `heal`, `partition`, `heal-partition`, `wipe`, `recover`, `ops`, `join`, `expect`, `expect-down`, `write`, `read`, `sleep`, `workload-start`, `workload-stop`, `verify`, `choose-survivor`"),
        ("[[step]]\nstop = { nodes = \"node1\", grace = \"1s\" }\n", "t.toml:4:27: unknown field `grace`, expected `nodes` or `timeout`"),
        ("[[step]]\nsleep = { duration = \"5 parsecs\" }\n", "t.toml:4:22: invalid duration \"5 parsecs\": expected e.g. \"500ms\", \"5s\", \"2m\""),
        ("[defaults]\ntimeout = \"soon\"\n[[step]]\nup = {}\n", "t.toml:4:11: invalid duration \"soon\": expected e.g. \"500ms\", \"5s\", \"2m\""),
        ("[[step]]\nstop = { nodes = \"node9\" }\n", "t.toml:4:18: unknown node \"node9\"; expected one of node1, node2, node3 or all, running, stopped, leader, followers, any-follower"),
        ("[[step]]\nwipe = { nodes = \"${ghost}\" }\n", "t.toml:4:18: `${ghost}` refers to nothing: no earlier step captures \"ghost\""),
        ("[[step]]\nexpect = { that = { role = \"${node1.role}\", term = \"${later}\" } }\n[[step]]\nexpect = { that = { role = \"leader\" }, capture = { later = \"term\" } }\n", "t.toml:4:52: `${later}` refers to nothing; expected self.FIELD, NODE.FIELD (NODE a node name, leader, or a capture holding a node name) or a name captured by an earlier step"),
        ("[[step]]\nexpect = { that = { rol = \"leader\" } }\n", "t.toml:4:27: unknown field \"rol\" of a node's state; expected one of api_base_url, applied_index, cluster_id, failure, fenced, health, info, last_applied_index, last_log_index, leader_api_base_url, leader_id, leader_url, learners, log_index, members, name, node_id, node_name, recovered_at, recovery_generation, role, term, url, version, voters"),
        ("[[step]]\nexpect = { that = { term = { gte = 1 } } }\n", "t.toml:4:28: unknown matcher `gte`; expected one of: one_of, ne, not_empty, same, gt, ge, lt, le, contains, excludes, len"),
        ("[[step]]\nexpect = { that = { term = { gt = \"one\" } } }\n", "t.toml:4:28: `gt` takes a number"),
        ("[[step]]\nexpect = { that = {} }\n", "t.toml:3:1: `expect` needs at least one field in `that`"),
        ("[[step]]\nrecover = { node = \"all\" }\n", "t.toml:4:20: this step acts on exactly one node: a name, `leader`, `any-follower` or `${capture}`"),
        ("[[step]]\nops = { node = \"node1\", run = [\"rm\", \"-rf\"] }\n", "t.toml:4:31: `run` must start with one of the profile's programs: xp, xp-ops"),
        ("[[step]]\nkill = { nodes = \"node1\", signal = \"SIGWINCH\" }\n", "t.toml:4:36: unknown signal \"SIGWINCH\"; expected one of SIGKILL, SIGTERM, SIGINT, SIGHUP, SIGSTOP, SIGCONT"),
        ("[[step]]\nwrite = { via = \"leader\" }\n", "t.toml:3:1: `write` needs `keys` or `count`"),
        ("[[step]]\nread = { via = \"leader\" }\n", "t.toml:3:1: `read` needs `keys` or `all_written = true`"),
        ("[[step]]\nstop = { nodes = [] }\n", "t.toml:4:18: empty node selector"),
        ("cluster = \"etcd-3\"\n[[step]]\nup = {}\n", "t.toml:3:11: unknown cluster profile \"etcd-3\"; this run has \"xp-3\""),
        ("surprise = 1\n[[step]]\nup = {}\n", "t.toml:3:1: unknown field `surprise`, expected one of `name`, `summary`, `cluster`, `defaults`, `allow_split_brain`, `step`"),
        ("", "t.toml:1:1: a scenario needs at least one [[step]]"),
        ("[[step]]\nworkload-start = { rate = 0 }\n", "t.toml:3:1: `rate` must be between 1 and 2000 writes per second"),
        ("[[step]]\nverify = { max_lost = -1 }\n", "t.toml:4:23: invalid value: integer `-1`, expected u64"),
        ("[[step]]\nchoose-survivor = { among = \"stopped\" }\n", "t.toml:4:19: missing field `capture`"),
        ("[[step]]\npartition = { groups = [[\"node1\", \"node2\"], [\"node2\"]] }\n", "t.toml:4:45: node2 is in two groups; the groups must be disjoint"),
        ("[[step]]\npartition = { groups = [\"all\"] }\n", "t.toml:4:25: a partition group cannot be `all`: the groups must be disjoint"),
        ("[[step]]\npartition = { groups = [] }\n", "t.toml:3:1: `partition` needs at least one group in `groups`"),
        ("[[step]]\npartition = { groups = [[\"node7\"]] }\n", "t.toml:4:25: unknown node \"node7\"; expected one of node1, node2, node3 or all, running, stopped, leader, followers, any-follower"),
        ("allow_split_brain = \"yes\"\n[[step]]\nup = {}\n", "t.toml:3:21: invalid type: string \"yes\", expected a boolean"),
        ("[[step]]\nup = {\n", "t.toml:4:7: invalid inline table\nexpected `}`"),
    ];
    let mut wrong = Vec::new();
    for (body, expected) in cases {
        let src = format!("{HEAD}{body}");
        let got = parse(Path::new("t.toml"), &src, &profile())
            .map(|_| String::from("(parsed)"))
            .unwrap_or_else(|e| e.to_string());
        if got != *expected {
            wrong.push(format!("for:\n{body}\n   got: {got:?}\n  want: {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn missing_name_is_reported() {
    let e =
        parse(Path::new("t.toml"), "summary = \"s\"\n[[step]]\nup = {}\n", &profile()).unwrap_err();
    assert_eq!(e.to_string(), "t.toml:1:1: missing field `name`");
}

/// Repo rule: every shipped scenario parses against its profile.
#[test]
fn every_shipped_scenario_parses() {
    let dir = root().join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let src = std::fs::read_to_string(&path).unwrap();
            let cluster = scenario::parse::cluster_of(&src, "xp-3");
            let p = Profile::load(&Profile::path_for(&root(), &cluster)).unwrap();
            let s = parse(&path, &src, &p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                path.file_stem().unwrap().to_str().unwrap(),
                s.name,
                "file name matches `name`"
            );
            n += 1;
        }
    }
    assert!(n >= 6, "found {n} scenarios");
}

/// Repo rule: for every profile, the compose file's services, the profile's nodes and the env
/// files agree.
#[test]
fn compose_services_match_profile_nodes() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("compose")).unwrap() {
        let path = e.unwrap().path();
        if path.to_string_lossy().ends_with(".profile.toml") {
            check_profile(&Profile::load(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 2, "found {n} profiles");
}

fn check_profile(p: &Profile) {
    let compose = std::fs::read_to_string(p.resolve(&p.compose_file)).unwrap();
    let services: Vec<String> = compose
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':').to_owned())
        .collect();
    let nodes: Vec<String> = p.nodes.iter().map(|n| n.service.clone()).collect();
    assert_eq!(services, nodes);
    for n in &p.nodes {
        let env = std::fs::read_to_string(p.resolve(&n.env_file)).unwrap();
        assert!(env.contains(&format!("={}\n", n.url)), "{}'s env file names its URL", n.name);
        // The runner writes each run's env file (the profile's, plus TLS keys) into
        // CHAOS_ENV_DIR and the node's certificates into CHAOS_TLS_DIR; the node reads the
        // file mounted, or compose reads it into the container's environment.
        let env_file = format!("${{CHAOS_ENV_DIR}}/{}.env", n.name);
        let wanted = match &p.env_file_in_container {
            Some(inside) => format!("{env_file}:{inside}:ro"),
            None => format!("env_file: {env_file}"),
        };
        assert!(compose.contains(&wanted), "{} has its env file: {wanted}", n.name);
        if let Some(tls) = &p.tls {
            assert!(
                compose.contains(&format!(
                    "${{CHAOS_TLS_DIR}}/{}:{}:ro",
                    n.name, tls.dir_in_container
                )),
                "{} mounts its TLS directory",
                n.name
            );
        }
        assert!(p.resolve(&n.env_file).exists(), "{}'s env file exists", n.name);
    }
}

/// Repo rule: the checked-in JSON Schema is the one the parser's types generate.
#[test]
fn checked_in_schema_is_current() {
    let path = root().join("docs/scenario.schema.json");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == scenario::parse::json_schema(),
        "{} is stale: run `cargo xtask schema` and commit it",
        path.display()
    );
    let schema: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
    assert!(schema["$defs"]["Step"].to_string().contains("choose-survivor"));
}

/// A profile that names a backend, source, field, program or token file that does not exist is
/// refused when it loads, naming the file (and, for the target, line and column) and what to do.
#[test]
fn a_broken_profile_is_refused_before_anything_starts() {
    let good = std::fs::read_to_string(root().join("compose/xp-3.profile.toml")).unwrap();
    // (replace this, with that, the error must contain)
    let cases: &[(&str, &str, &str)] = &[
        (
            "run = [",
            "backends = [\"dockr\"]\nrun = [",
            "backends: unknown backend \"dockr\"; expected one of docker, local",
        ),
        (
            "term = \"/info/term\"",
            "term = \"/inf/term\"",
            "bad.profile.toml:32:8: \"/inf/term\" reads the source \"inf\", which [target.sources] does not declare (declared: info)",
        ),
        (
            "applied_index = \"/info/last_applied_index\"",
            "applied_index = \"/info/last_aplied_index\"",
            "bad.profile.toml:35:17: \"/info/last_aplied_index\": the info source has no field \"last_aplied_index\"",
        ),
        (
            "role = \"/info/role\"",
            "role = \"info/role\"",
            "bad.profile.toml:31:8: \"info/role\" is not a JSON pointer",
        ),
        (
            "write = { method = \"PUT\"",
            "write = { method = \"PATCH\"",
            "method \"PATCH\" is not one of GET, POST, PUT",
        ),
        (
            "body = { value = \"{value}\" }",
            "body = { v = \"x\" }",
            "kv.write has no body with `\"{value}\"` in it",
        ),
        (
            "wipe = [\"xp\", \"wipe\"",
            "wipe = [\"rm\", \"wipe\"",
            "wipe: [\"rm\", \"wipe\", \"--yes\"] must start with a program of the image (xp, xp-ops)",
        ),
        (
            "read = { path = \"/api/kv/{key}\" }",
            "read = { path = \"/api/kv\" }",
            "kv.read names no `{key}` (in its path or body)",
        ),
        (
            "term = \"/info/term\"",
            "term = \"/info/term/\"",
            "\"/info/term/\" has an empty segment",
        ),
        (
            "[target.sources.info]",
            "[target.sources.members]",
            "a source may not be called \"members\": that is a field of every node's state",
        ),
        (
            "crash_patterns = [\"panicked at\"]",
            "crash_patterns = [\"panicked at\", \" \"]",
            "crash_patterns: an empty pattern would match every line",
        ),
        (
            "[join.token]",
            "[join.tokn]",
            "unknown field `tokn`",
        ),
        (
            "[local]\nenv_file_flag = \"--env-file\"\nset = { XP_DATA_DIR = \"{data_dir}\", XP_BIND = \"127.0.0.1:{port}\" }",
            "",
            "no [local] section, so the cluster cannot run as local processes",
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "the profile no longer has {from:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.profile.toml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.profile.toml"), "{err}");
        assert!(err.contains(want), "{from:?} -> {to:?}:\n   got: {err}\n  want: {want}");
    }
}

/// The same for what only the etcd profile has: a command source, peer URLs.
#[test]
fn a_broken_command_source_or_peer_url_is_refused_before_anything_starts() {
    let good = std::fs::read_to_string(root().join("compose/etcd-3.profile.toml")).unwrap();
    // (replace this, with that, the error must contain)
    let cases: &[(&str, &str, &str)] = &[
        (
            "command = [\"etcdctl\", \"--endpoints\"",
            "command = [\"etcdctl3\", \"--endpoints\"",
            "bad.profile.toml:128:11: target.sources.cluster: \"etcdctl3\" is no program of the image (etcd, etcdctl, busybox)",
        ),
        (
            "[target.sources.cluster]\n",
            "[target.sources.cluster]\npath = \"/v3/cluster/member/list\"\n",
            "a source is an HTTP request (`path`) or a `command`, not both",
        ),
        (
            "[target.sources.cluster]\n",
            "[target.sources.cluster]\nmethod = \"POST\"\n",
            "a command source takes no `method` or `body`",
        ),
        (
            "command = [\"etcdctl\", \"--endpoints\", \"http://127.0.0.1:{port}\", \"--command-timeout\", \"2s\", \"member\", \"list\", \"-w\", \"json\"]",
            "command = []",
            "`command` is empty",
        ),
        (
            "primary = \"status\"",
            "primary = \"cluster\"",
            "the primary source \"cluster\" is read several times a second",
        ),
        (
            "peer_url = \"http://node2:2380\"",
            "peer_url = \"node2\"",
            "node node2: peer_url \"node2\" must be an absolute URL with a port",
        ),
        (
            "peer_url = \"http://node2:2380\"",
            "peer_url = \"http://node1:2380\"",
            "node node2: peer_url \"http://node1:2380\" is another node's URL too",
        ),
        (
            "url = \"http://node2:2379\"",
            "url = \"http://node2\"",
            "node node2: url \"http://node2\" must be an absolute URL with a port",
        ),
        (
            "name = \"node3\"",
            "name = \"node2\"",
            "node node2: two [[node]] tables have this name",
        ),
        (
            "data_dir_in_container = \"/var/lib/etcd\"",
            "data_dir_in_container = \"/var/lib/etcd/\"",
            "data_dir_in_container: \"/var/lib/etcd/\" must be an absolute directory other than `/`",
        ),
        (
            "data_dir_in_container = \"/var/lib/etcd\"",
            "data_dir_in_container = \"var/lib/etcd\"",
            "must be an absolute directory",
        ),
        (
            "data_dir_in_container = \"/var/lib/etcd\"",
            "data_dir_in_container = \"/\"",
            "must be an absolute directory other than `/`",
        ),
        (
            "run = [\"busybox\", \"sh\"",
            "run = [\"bash\", \"sh\"",
            "run: [\"bash\", \"sh\"",
        ),
        (
            "\"member\", \"list\", \"-w\", \"json\"]",
            "\"member\", \"list\", \"-w\", \"json\", \"--endpoints={node_url}\"]",
            "target.sources.cluster: `{node_url}` is not filled in for a command source",
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "the profile no longer has {from:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.profile.toml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.profile.toml"), "{err}");
        assert!(err.contains(want), "{from:?} -> {to:?}:\n   got: {err}\n  want: {want}");
    }
}

/// One answer per action for what it does to the cluster: recovery times are measured after
/// outages, restarts and recoveries; changes are only marked; observation steps are neither.
#[test]
fn every_action_has_one_fault_kind() {
    use scenario::model::FaultKind::*;
    let cases: &[(&str, Option<scenario::model::FaultKind>)] = &[
        ("stop = { nodes = \"node1\" }", Some(Outage)),
        ("kill = { nodes = \"node1\" }", Some(Outage)),
        ("pause = { nodes = \"node1\" }", Some(Outage)),
        ("isolate = { nodes = \"node1\" }", Some(Outage)),
        ("restart = { nodes = \"node1\" }", Some(Restart)),
        ("recover = { node = \"node1\" }", Some(Recovery)),
        ("start = { nodes = \"node1\" }", Some(Change)),
        ("wipe = { nodes = \"node1\" }", Some(Change)),
        ("join = { node = \"node1\" }", Some(Change)),
        ("heal-partition = {}", Some(Change)),
        ("expect = { that = { role = \"leader\" } }", None),
        ("sleep = { duration = \"1s\" }", None),
        ("verify = {}", None),
    ];
    for (step, want) in cases {
        let src = format!("name = \"t\"\nsummary = \"t\"\n[[step]]\nup = {{}}\n[[step]]\n{step}\n");
        let s = parse(Path::new("t.toml"), &src, &profile()).unwrap();
        assert_eq!(s.steps[1].step.fault_kind(), *want, "{step}");
        assert_eq!(
            want.is_some_and(|k| k.measured()),
            matches!(want, Some(Outage | Restart | Recovery))
        );
    }
}
