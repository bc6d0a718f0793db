//! Repo rule: the scenario engine knows no system by name. Everything about xp (its fields,
//! routes, env keys, the runner's compose project prefix) lives in its profiles and in `xtask`;
//! a name of xp's creeping into `crates/scenario/src` fails here, with the file and line.
//! (`tests.rs` files are exempt: their fixtures are xp's and etcd's real answers.)

use std::path::{Path, PathBuf};

/// xp's routes, env keys, binaries and the fields of its info answer that are not generic Raft
/// terms (a "last log index" or a "join token" is anyone's).
const FORBIDDEN: &[&str] = &[
    "/api/",
    "XP_",
    "xpchaos",
    "xp-ops",
    "api_base_url",
    "last_applied_index",
    "node_name",
    "recovery_generation",
    "recovered_at",
    "\"xp\"",
    "xp-3",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_engine_names_no_system() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {} files under {}", files.len(), src.display());
    let mut hits = Vec::new();
    for f in files.iter().filter(|f| f.file_name().is_some_and(|n| n != "tests.rs")) {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    hits.push(format!(
                        "{}:{}: names {word:?}: {}",
                        f.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the engine must know no system by name (move it to a profile or to xtask):\n{}",
        hits.join("\n")
    );
}

/// The check above can fail: it finds a forbidden name in a line that has one.
#[test]
fn the_tidy_check_sees_a_name() {
    let line = r#"let url = format!("{base}/api/cluster/info");"#;
    assert!(FORBIDDEN.iter().any(|w| line.contains(w)));
}
