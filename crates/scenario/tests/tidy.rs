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

/// The crate's layers, as `docs/architecture.md` draws them: (files under this path, names
/// they must not use). The model is plain data; parsing depends on no backend and no engine;
/// measurements and backends know no engine; the report's model knows none of its renderings.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "model/",
        &[
            "crate::parse",
            "crate::engine",
            "crate::backend",
            "crate::report",
            "crate::measure",
            "crate::target",
            "crate::run",
        ],
    ),
    (
        "parse/",
        &["crate::backend", "crate::engine", "crate::measure", "crate::report", "crate::run"],
    ),
    ("measure/", &["crate::engine", "crate::report", "crate::run", "crate::parse"]),
    (
        "backend/",
        &["crate::engine", "crate::report", "crate::measure", "crate::run", "crate::parse"],
    ),
    (
        "target/",
        &["crate::engine", "crate::report", "crate::run", "crate::parse", "crate::measure"],
    ),
    ("report/mod.rs", &["html::"]),
    ("report/junit.rs", &["html::"]),
    ("report/summary.rs", &["html::"]),
];

/// No file of the crate (tests apart) grows past this: a file that does is two jobs.
const MAX_LINES: usize = 700;

/// Lines of `text` outside its `#[cfg(test)]` module and comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("#[cfg(test)]"))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Which (path, forbidden name) pairs of [`LAYERS`] `rel`'s `text` breaks, with line numbers.
fn layer_breaks(rel: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, forbidden) in LAYERS.iter().filter(|(p, _)| rel.starts_with(p)) {
        for (i, line) in code_lines(text) {
            for word in *forbidden {
                if line.contains(word) {
                    out.push(format!("{rel}:{}: {prefix} uses {word}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn each_layer_uses_only_the_layers_below_it_and_no_file_is_two_jobs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut hits = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        hits.extend(layer_breaks(&rel, &text));
        let n = text.lines().count();
        if n > MAX_LINES && !rel.ends_with("tests.rs") {
            hits.push(format!("{rel}: {n} lines (at most {MAX_LINES}): split it by job"));
        }
    }
    assert!(hits.is_empty(), "layering (docs/architecture.md):\n{}", hits.join("\n"));
}

/// The layering check can fail: an import across layers is found, one in a comment or in a
/// test module is not.
#[test]
fn the_layering_check_sees_an_import_across_layers() {
    let cases: &[(&str, &str, usize)] = &[
        ("parse/mod.rs", "use crate::backend::Backend;\n", 1),
        ("parse/mod.rs", "// crate::backend is not used here\n", 0),
        ("parse/mod.rs", "fn f() {}\n#[cfg(test)]\nmod tests { use crate::engine::Engine; }\n", 0),
        ("report/mod.rs", "pub fn write() { html::render(); }\n", 1),
        ("report/files.rs", "pub fn write() { html::render(); }\n", 0),
        ("model/step.rs", "use crate::target::Role;\n", 1),
    ];
    for (rel, text, want) in cases {
        assert_eq!(layer_breaks(rel, text).len(), *want, "{rel}: {text:?}");
    }
}
