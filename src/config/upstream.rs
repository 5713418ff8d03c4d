//! Upstream files: the nodes an output balances over (`upstream` property), as Fluent
//! Bit reads them in `flb_upstream_ha_from_file`: a classic file with one `[UPSTREAM]`
//! (`name`) and one or more `[NODE]` sections (`name`, `host`, `port`, `tls*` and the
//! output's own properties), or a YAML file whose `upstream_servers:` has one group with
//! its `nodes:`. Relative paths are tried from the working directory, then from the main
//! config file's directory. Errors name the file:line of the node at fault.

use std::path::Path;

use super::model::{Document, Entry, Section, Span};
use super::ConfigError;

/// One upstream: its name and nodes, in file order.
#[derive(Clone, Debug)]
pub struct UpstreamDef {
    pub name: String,
    /// The file it was read from.
    pub file: String,
    pub nodes: Vec<NodeDef>,
}

/// One `[NODE]`.
#[derive(Clone, Debug)]
pub struct NodeDef {
    pub name: String,
    /// The `[NODE]` line (the list item in YAML).
    pub span: Span,
    /// Every key but `name`: `host`, `port`, `tls*` and the output's own properties.
    pub entries: Vec<Entry>,
}

/// Loads the upstream file named by property `upstream` (set at `at`).
pub fn load(file: &str, at: &Span, main_dir: Option<&Path>) -> Result<UpstreamDef, ConfigError> {
    let path = super::resolve_path(file, main_dir).map_err(|tried| {
        ConfigError::invalid(
            at,
            format!(
                "[upstream_ha] cannot load Upstream file '{file}': no such file (searched: {})",
                tried.join(", ")
            ),
            Some("check the path in 'upstream' (relative paths are tried from the working directory, then from the main config file's directory)".into()),
        )
    })?;
    let doc = if super::yaml::is_yaml(&path) {
        super::yaml::load(&path)?
    } else {
        super::parser::load(&path)?
    };
    from_document(&doc, &path.display().to_string(), at)
}

fn is(section: &Section, header: &str) -> bool {
    section.header.trim().eq_ignore_ascii_case(header)
}

fn name_of(section: &Section) -> Option<&str> {
    section
        .entries
        .iter()
        .find(|e| e.key == "name")
        .map(|e| e.value.as_str())
        .filter(|v| !v.is_empty())
}

/// The upstream of a loaded upstream file.
pub fn from_document(doc: &Document, file: &str, at: &Span) -> Result<UpstreamDef, ConfigError> {
    let groups: Vec<&Section> = doc.sections.iter().filter(|s| is(s, "upstream")).collect();
    let Some(group) = groups.first() else {
        return Err(ConfigError::invalid(
            at,
            format!("[upstream_ha] section name 'upstream' could not be found in {file}"),
            Some("an upstream file has one [UPSTREAM] section with a name and [NODE] sections (or, in YAML, 'upstream_servers:' with 'nodes:')".into()),
        ));
    };
    if let Some(second) = groups.get(1) {
        // Fluent Bit keeps the first [UPSTREAM] of a classic file but the last group of a
        // YAML one; one group per file leaves no doubt about which nodes are used.
        return Err(ConfigError::invalid(
            &second.span,
            format!(
                "[upstream_ha] a second upstream in {file} (the first is at {})",
                group.span
            ),
            Some(
                "keep one upstream per file, and point each output's 'upstream' at its own file"
                    .into(),
            ),
        ));
    }
    let name = name_of(group).ok_or_else(|| {
        ConfigError::invalid(
            &group.span,
            format!("[upstream_ha] missing name for upstream at {file}"),
            Some("add 'name <upstream name>' to the upstream".into()),
        )
    })?;
    let mut nodes: Vec<NodeDef> = Vec::new();
    for (i, s) in doc.sections.iter().filter(|s| is(s, "node")).enumerate() {
        let required = |key: &str| {
            s.entries
                .iter()
                .any(|e| e.key == key && !e.value.is_empty())
                .then_some(())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        &s.span,
                        format!("[upstream_ha] no '{key}' has been set on node #{}", i + 1),
                        Some(format!(
                            "every node needs 'name', 'host' and 'port'; add '{key}'"
                        )),
                    )
                })
        };
        required("name")?;
        required("host")?;
        required("port")?;
        let name = name_of(s).unwrap_or_default().to_string();
        if let Some(first) = nodes.iter().find(|n| n.name == name) {
            return Err(ConfigError::invalid(
                &s.span,
                format!(
                    "[upstream_ha] node name '{name}' is used twice (first at {})",
                    first.span
                ),
                Some("give each node its own name: logs and metrics name the node".into()),
            ));
        }
        nodes.push(NodeDef {
            name,
            span: s.span.clone(),
            entries: s
                .entries
                .iter()
                .filter(|e| e.key != "name")
                .cloned()
                .collect(),
        });
    }
    if nodes.is_empty() {
        return Err(ConfigError::invalid(
            &group.span,
            format!("[upstream_ha] no nodes defined in {file}"),
            Some("add at least one [NODE] section with name, host and port".into()),
        ));
    }
    Ok(UpstreamDef {
        name: name.to_string(),
        file: file.to_string(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<UpstreamDef, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        load(p.to_str().unwrap(), &Span::new("main.conf", 7), None)
            .map_err(|e| e.to_string().replace(&p.display().to_string(), name))
    }

    #[test]
    fn classic_and_yaml_files_give_the_same_nodes() {
        let classic = load_text(
            "up.conf",
            "[UPSTREAM]\n    name balance\n\n[NODE]\n    name n1\n    host 127.0.0.1\n    port 43000\n\n[NODE]\n    name n2\n    host 127.0.0.2\n    port 44000\n    shared_key s\n",
        )
        .unwrap();
        let yaml = load_text(
            "up.yaml",
            "upstream_servers:\n  - name: balance\n    nodes:\n      - name: n1\n        host: 127.0.0.1\n        port: 43000\n      - name: n2\n        host: 127.0.0.2\n        port: 44000\n        shared_key: s\n",
        )
        .unwrap();
        for u in [&classic, &yaml] {
            assert_eq!(u.name, "balance");
            let names: Vec<_> = u.nodes.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(names, ["n1", "n2"]);
            let keys: Vec<_> = u.nodes[1]
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            assert_eq!(
                keys,
                [
                    ("host", "127.0.0.2"),
                    ("port", "44000"),
                    ("shared_key", "s")
                ]
            );
        }
        assert_eq!(classic.nodes[1].span.line, 9);
        assert_eq!(yaml.nodes[1].span.line, 7);
    }

    #[test]
    fn what_is_missing_is_said_where_it_is_missing() {
        let cases = [
            (
                "[NODE]\n    name n1\n    host h\n    port 1\n",
                "section name 'upstream' could not be found",
            ),
            (
                "[UPSTREAM]\n    name u\n[NODE]\n    name n1\n    port 1\n",
                "up.conf:3: [upstream_ha] no 'host' has been set on node #1",
            ),
            (
                "[UPSTREAM]\n    name u\n",
                "up.conf:1: [upstream_ha] no nodes defined",
            ),
            (
                "[UPSTREAM]\n    host x\n[NODE]\n    name n1\n    host h\n    port 1\n",
                "missing name for upstream",
            ),
            (
                "[UPSTREAM]\n    name u\n[NODE]\n    name n\n    host h\n    port 1\n[NODE]\n    name n\n    host h\n    port 2\n",
                "up.conf:7: [upstream_ha] node name 'n' is used twice (first at up.conf:3)",
            ),
            (
                "[UPSTREAM]\n    name u\n[UPSTREAM]\n    name v\n[NODE]\n    name n\n    host h\n    port 1\n",
                "up.conf:3: [upstream_ha] a second upstream",
            ),
        ];
        for (text, want) in cases {
            let e = load_text("up.conf", text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = load("no-such-upstream.conf", &Span::new("main.conf", 7), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "main.conf:7: [upstream_ha] cannot load Upstream file 'no-such-upstream.conf'"
            ),
            "{e}"
        );
    }
}
