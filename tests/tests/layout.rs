//! The layout rule, read from the source tree: a line lives in the crate of the only function
//! that runs it, and code two or more functions run lives in `amiguard` (`shared/`), which never
//! names a function. Inside a function crate, `core/` is pure, its modules form no circle, and no
//! file's non-test part grows past 600 lines. Each check fails naming the file and the line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use amiguard_integration_tests::template::function_packages;
use amiguard_integration_tests::workspace_root;

/// The longest non-test part (the lines before a file's `#[cfg(test)]` module) a source file may have.
const MAX_LINES: usize = 600;

/// What a file under a `core/` must not mention: the SDK, async code, the ledger, the environment.
const IMPURE: &[&str] = &["aws_sdk_", "async fn", "LedgerStore", "amiguard::ledger", "std::env"];

/// The skeleton every function crate has (`src/` files and folders).
const SKELETON: &[&str] = &[
    "main.rs",
    "lib.rs",
    "handler.rs",
    "config.rs",
    "event.rs",
    "report.rs",
    "metrics.rs",
    "error.rs",
    "ports.rs",
    "core",
    "flow",
    "adapters",
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    // A missing folder holds no file (the skeleton test names what is missing).
    let mut pending: Vec<PathBuf> = dir.is_dir().then(|| dir.to_path_buf()).into_iter().collect();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn function_dirs() -> Vec<(String, PathBuf)> {
    let root = workspace_root();
    let packages = function_packages();
    assert!(packages.len() >= 3, "the function packages: {packages:?}");
    packages.into_iter().map(|name| (name.clone(), root.join("functions").join(&name))).collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

/// `text` with the contents of its string and character literals blanked (lines kept), so that
/// a tag value such as `"snapshot-on-stop"` is data, not a name.
fn without_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut in_line_comment, mut in_block_comment) = (false, 0usize);
    while let Some(c) = chars.next() {
        if in_line_comment {
            in_line_comment = c != '\n';
            out.push(c);
            continue;
        }
        if in_block_comment > 0 {
            if c == '*' && chars.peek() == Some(&'/') {
                in_block_comment -= 1;
                out.push(c);
                out.push(chars.next().unwrap());
            } else {
                out.push(c);
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                in_line_comment = true;
                out.push(c);
            }
            '/' if chars.peek() == Some(&'*') => {
                in_block_comment += 1;
                out.push(c);
            }
            'r' if matches!(chars.peek(), Some('#') | Some('"'))
                && !out.ends_with(|p: char| p.is_alphanumeric() || p == '_') =>
            {
                // A raw string: r"...", r#"..."#.
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    out.extend(std::iter::repeat_n('#', hashes));
                    continue;
                }
                chars.next();
                out.push('"');
                let closing: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                let mut body = String::new();
                for b in chars.by_ref() {
                    body.push(b);
                    if body.ends_with(&closing) {
                        break;
                    }
                }
                out.extend(body.chars().map(|b| if b == '\n' { '\n' } else { ' ' }));
            }
            '"' => {
                out.push('"');
                while let Some(b) = chars.next() {
                    match b {
                        '\\' => {
                            chars.next();
                            out.push_str("  ");
                        }
                        '"' => break,
                        '\n' => out.push('\n'),
                        _ => out.push(' '),
                    }
                }
                out.push('"');
            }
            '\'' => {
                // A character literal ('a', '\n', '"'), or a lifetime ('a): only the first is blanked.
                let rest: String = chars.clone().take(3).collect();
                let literal = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                out.push('\'');
                if literal {
                    let mut escaped = false;
                    for b in chars.by_ref() {
                        if b == '\'' && !escaped {
                            break;
                        }
                        escaped = b == '\\' && !escaped;
                        out.push(' ');
                    }
                    out.push('\'');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The lines of `text` before its `#[cfg(test)]` module.
fn non_test_lines(text: &str) -> usize {
    text.lines().take_while(|line| line.trim() != "#[cfg(test)]").count()
}

#[test]
fn every_function_crate_has_the_one_skeleton() {
    let mut missing = Vec::new();
    for (name, dir) in function_dirs() {
        for part in SKELETON {
            if !dir.join("src").join(part).exists() {
                missing.push(format!("functions/{name}/src/{part}"));
            }
        }
    }
    assert!(missing.is_empty(), "missing from the skeleton (DESIGN.md, one home per function): {missing:#?}");
}

#[test]
fn core_is_pure() {
    let mut found = Vec::new();
    for (_, dir) in function_dirs() {
        for file in rust_files(&dir.join("src/core")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for word in IMPURE.iter().filter(|word| line.contains(*word)) {
                    found.push(format!("{}:{}: mentions `{word}`: {}", relative(&file), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a core/ holds pure decisions only (no SDK, async, ledger or environment):\n{}",
        found.join("\n")
    );
}

#[test]
fn shared_never_names_a_function() {
    let mut names: Vec<String> = Vec::new();
    for (package, _) in function_dirs() {
        names.push(package.replace('-', "_"));
        names.push(package);
    }
    let mut found = Vec::new();
    for file in rust_files(&workspace_root().join("shared/src")) {
        let text = without_literals(&std::fs::read_to_string(&file).unwrap());
        for (n, line) in text.lines().enumerate() {
            for name in names.iter().filter(|name| line.contains(name.as_str())) {
                found.push(format!("{}:{}: names `{name}`: {}", relative(&file), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "shared/ is the platform: it never names a function (code or comment):\n{}",
        found.join("\n")
    );
}

/// The modules of one `core/` that `file` imports (`super::x`, `crate::core::x`).
fn core_imports(text: &str, modules: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let mut imports = BTreeMap::new();
    for (n, line) in without_literals(text).lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for prefix in ["super::", "crate::core::"] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let mut named: Vec<&str> = Vec::new();
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    named.extend(group.split(',').map(|part| part.trim().split("::").next().unwrap_or_default()));
                } else {
                    named.push(rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default());
                }
                for module in named.into_iter().filter(|m| modules.contains(*m)) {
                    imports.entry(module.to_string()).or_insert(n + 1);
                }
            }
        }
    }
    imports
}

#[test]
fn the_modules_of_a_core_import_each_other_in_no_circle() {
    let mut circles = Vec::new();
    for (_, dir) in function_dirs() {
        let core = dir.join("src/core");
        let files: BTreeMap<String, PathBuf> = rust_files(&core)
            .into_iter()
            .filter(|f| f.parent() == Some(core.as_path()) && f.file_stem().is_some_and(|s| s != "mod"))
            .map(|f| (f.file_stem().unwrap().to_string_lossy().to_string(), f))
            .collect();
        let modules: BTreeSet<String> = files.keys().cloned().collect();
        let graph: BTreeMap<String, BTreeMap<String, usize>> = files
            .iter()
            .map(|(name, file)| {
                let mut imports = core_imports(&std::fs::read_to_string(file).unwrap(), &modules);
                imports.remove(name);
                (name.clone(), imports)
            })
            .collect();
        // Depth-first search; a module met again on the current path closes a circle.
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeMap<String, usize>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == node) {
                return Some(path[at..].to_vec());
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
                if let Some(circle) = visit(next, graph, path, done) {
                    return Some(circle);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            if let Some(circle) = visit(module, &graph, &mut Vec::new(), &mut done) {
                let steps: Vec<String> = circle
                    .iter()
                    .zip(circle.iter().cycle().skip(1))
                    .map(|(from, to)| format!("{}:{} imports {to}", relative(&files[from]), graph[from][to]))
                    .collect();
                circles.push(steps.join("; "));
                break;
            }
        }
    }
    assert!(circles.is_empty(), "the modules of a core/ import each other in a circle:\n{}", circles.join("\n"));
}

#[test]
fn no_source_files_non_test_part_passes_600_lines() {
    let root = workspace_root();
    let mut long = Vec::new();
    let mut dirs = vec![root.join("shared/src")];
    dirs.extend(function_dirs().into_iter().map(|(_, dir)| dir.join("src")));
    for dir in dirs {
        for file in rust_files(&dir) {
            let lines = non_test_lines(&std::fs::read_to_string(&file).unwrap());
            if lines > MAX_LINES {
                long.push(format!("{}:{}: {lines} lines before its tests", relative(&file), MAX_LINES + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these along their seams (at most {MAX_LINES} lines before the tests):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_read_what_they_should() {
    // Literals are blanked, names in code and comments are not.
    let text = "const V: &str = \"snapshot-on-stop\"; // for snapshot-on-stop\nlet c = '\"'; let s = r#\"a \"b\"\"#; x::snapshot_on_stop";
    let stripped = without_literals(text);
    assert_eq!(stripped.matches("snapshot-on-stop").count(), 1, "{stripped}");
    assert!(stripped.contains("x::snapshot_on_stop"), "{stripped}");
    assert_eq!(stripped.lines().count(), 2);
    let modules: BTreeSet<String> = ["facts", "planner", "origin"].map(String::from).into();
    let imports =
        core_imports("use super::{facts::Id, origin};\nuse crate::core::planner::plan;\n// use super::x;", &modules);
    assert_eq!(
        imports.into_iter().collect::<Vec<_>>(),
        [("facts".into(), 1), ("origin".into(), 1), ("planner".into(), 2)]
    );
    assert_eq!(non_test_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
}
