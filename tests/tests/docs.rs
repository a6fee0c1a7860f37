//! The docs cannot drift from the code: every environment variable a function reads (its
//! `config::VARIABLES`, held by a unit test to what its configuration really asks for) is in
//! the settings table of its page in `docs/`, and every parameter of `template.yaml` is in the
//! README's deploy section.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use amiguard_integration_tests::template::load;
use amiguard_integration_tests::workspace_root;

/// The lines of the Markdown `section` (from its heading, which contains `heading`, to the next
/// heading of the same or a higher level).
fn section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = markdown.lines();
    let level = loop {
        let Some(line) = lines.next() else { panic!("no heading with {heading:?}") };
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && line.contains(heading) {
            break hashes;
        }
    };
    lines
        .take_while(|line| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes == 0 || hashes > level
        })
        .collect()
}

/// The names in backticks in the first column of the Markdown tables among `lines`.
fn first_column_names(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_variable_a_function_reads_is_in_its_pages_settings_table() {
    let functions: [(&str, &[&str]); 3] = [
        (snapshot_on_stop::FUNCTION, snapshot_on_stop::config::VARIABLES),
        (orphan_snapshot_sweeper::FUNCTION, orphan_snapshot_sweeper::config::VARIABLES),
        (untrusted_ami_alert::FUNCTION, untrusted_ami_alert::config::VARIABLES),
    ];
    let mut missing = Vec::new();
    for (function, variables) in functions {
        let page = format!("docs/{function}.md");
        let text = read(&page);
        let table = first_column_names(&section(&text, "Settings"));
        for variable in variables.iter().filter(|v| !table.contains(**v)) {
            missing.push(format!("{page}: `{variable}` is not in the Settings table"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_template_parameter_is_in_the_readmes_deploy_section() {
    let template = load();
    let parameters: Vec<String> =
        template["Parameters"].as_object().expect("template.yaml has Parameters").keys().cloned().collect();
    assert!(parameters.len() > 20, "{parameters:?}");
    let readme = read("README.md");
    let deploy = first_column_names(&section(&readme, "Deploy"));
    let missing: Vec<&String> = parameters.iter().filter(|p| !deploy.contains(*p)).collect();
    assert!(missing.is_empty(), "README.md's Deploy section has no table row for: {missing:?}");
}

#[test]
fn the_readers_find_what_they_should() {
    let text = "# T\n## Settings\n| Variable | x |\n|---|---|\n| `A` or `B` | `C` |\n### More\n| `D` | |\n## Next\n| `E` | |\n";
    let table = first_column_names(&section(text, "Settings"));
    assert_eq!(table, ["A", "B", "D"].map(String::from).into());
}
