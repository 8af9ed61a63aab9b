//! `rsupctl tree`: the supervisor trees with their states, each root followed
//! by its children in start order; a child supervisor is shown with its own
//! children below it. Containers without a supervisor are not shown.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rsup_client::Client;
use rsup_client::proto::{Supervisor, SupervisorChild};
use serde_json::{Value, json};

use super::say;
use super::supervisor::summary;

/// Show the supervisor trees and the states of their children
#[derive(Args)]
pub struct Tree {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Indented trees, one line per supervisor and child
    Text,
    /// One JSON object per root supervisor and line, children nested
    Json,
}

impl Tree {
    pub async fn execute(self, client: &Client) -> anyhow::Result<ExitCode> {
        let supervisors = client.list_supervisors().await?;
        let forest = Forest::new(&supervisors);
        match self.format {
            Format::Text => {
                let text = forest.text();
                if !text.is_empty() {
                    say(text.trim_end_matches('\n'))?;
                }
            }
            Format::Json => {
                for line in forest.json() {
                    say(line)?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The supervisors by name, and which of them start a tree.
struct Forest<'a> {
    all: &'a [Supervisor],
    by_name: HashMap<&'a str, &'a Supervisor>,
}

/// How a child is shown: a supervisor found in the list becomes a subtree,
/// anything else (a container, an unknown or repeated supervisor) one line.
enum Node<'a> {
    Subtree(&'a Supervisor),
    Leaf(&'a SupervisorChild),
}

impl<'a> Forest<'a> {
    fn new(all: &'a [Supervisor]) -> Forest<'a> {
        let by_name = all.iter().map(|s| (s.name.as_str(), s)).collect();
        Forest { all, by_name }
    }

    /// The roots in list (creation) order: supervisors without a parent, or
    /// whose parent is not in the list; then, so that none goes missing, any
    /// supervisor the trees did not reach (its parent does not list it, or
    /// the parents form a cycle).
    fn walk(&self, mut visit: impl FnMut(&'a Supervisor, &mut HashSet<&'a str>)) {
        let mut shown = HashSet::new();
        let orphan = |s: &Supervisor| s.parent.is_empty() || !self.by_name.contains_key(&*s.parent);
        for s in self.all.iter().filter(|s| orphan(s)) {
            if !shown.contains(s.name.as_str()) {
                visit(s, &mut shown);
            }
        }
        for s in self.all {
            if !shown.contains(s.name.as_str()) {
                visit(s, &mut shown);
            }
        }
    }

    /// The children of `s`; `shown` keeps a supervisor from appearing twice.
    fn children(&self, s: &'a Supervisor, shown: &mut HashSet<&'a str>) -> Vec<Node<'a>> {
        shown.insert(&s.name);
        s.children
            .iter()
            .map(|child| match self.by_name.get(child.name.as_str()) {
                Some(sub) if child.kind == "supervisor" && shown.insert(&sub.name) => {
                    Node::Subtree(sub)
                }
                _ => Node::Leaf(child),
            })
            .collect()
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.walk(|root, shown| {
            out.push_str(&summary(root));
            out.push('\n');
            self.text_children(root, "", shown, &mut out);
        });
        out
    }

    fn text_children(
        &self,
        s: &'a Supervisor,
        prefix: &str,
        shown: &mut HashSet<&'a str>,
        out: &mut String,
    ) {
        let nodes = self.children(s, shown);
        // Leaf names are padded so that their kinds line up.
        let width = nodes
            .iter()
            .filter_map(|node| match node {
                Node::Leaf(c) => Some(c.name.chars().count()),
                Node::Subtree(_) => None,
            })
            .max()
            .unwrap_or(0);
        for (i, node) in nodes.iter().enumerate() {
            let last = i + 1 == nodes.len();
            out.push_str(prefix);
            out.push_str(if last { "└── " } else { "├── " });
            match node {
                Node::Leaf(c) => {
                    let line = format!("{:<width$} {} {}", c.name, c.kind, c.state);
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
                Node::Subtree(sub) => {
                    out.push_str(&summary(sub));
                    out.push('\n');
                    let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
                    self.text_children(sub, &deeper, shown, out);
                }
            }
        }
    }

    fn json(&self) -> Vec<Value> {
        let mut roots = Vec::new();
        self.walk(|root, shown| roots.push(self.json_tree(root, shown)));
        roots
    }

    fn json_tree(&self, s: &'a Supervisor, shown: &mut HashSet<&'a str>) -> Value {
        let children: Vec<Value> = self
            .children(s, shown)
            .into_iter()
            .map(|node| match node {
                Node::Leaf(c) => json!({"kind": c.kind, "name": c.name, "state": c.state}),
                Node::Subtree(sub) => self.json_tree(sub, shown),
            })
            .collect();
        json!({
            "kind": "supervisor",
            "name": s.name,
            "strategy": s.strategy,
            "intensity": s.intensity,
            "period_ms": s.period_ms,
            "state": s.state,
            "restarts": s.restarts,
            "children": children,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(kind: &str, name: &str, state: &str) -> SupervisorChild {
        SupervisorChild {
            kind: kind.to_owned(),
            name: name.to_owned(),
            state: state.to_owned(),
        }
    }

    fn supervisor(
        name: &str,
        parent: &str,
        (strategy, intensity, period_ms): (&str, u32, u64),
        restarts: u64,
        children: Vec<SupervisorChild>,
    ) -> Supervisor {
        Supervisor {
            name: name.to_owned(),
            strategy: strategy.to_owned(),
            intensity,
            period_ms,
            parent: parent.to_owned(),
            state: "running".to_owned(),
            restarts,
            children,
        }
    }

    /// The example of the help text, listed child first.
    fn example() -> Vec<Supervisor> {
        vec![
            supervisor(
                "workers",
                "app",
                ("one_for_one", 5, 30_000),
                0,
                vec![child("container", "w1", "restarting")],
            ),
            supervisor(
                "app",
                "",
                ("one_for_all", 3, 10_000),
                2,
                vec![
                    child("container", "db", "running"),
                    child("container", "web", "running"),
                    child("supervisor", "workers", "running"),
                ],
            ),
        ]
    }

    #[test]
    fn text_tree_has_roots_first_and_indented_children() {
        let all = example();
        assert_eq!(
            Forest::new(&all).text(),
            "app (one_for_all, 3 in 10s) running, 2 restarts\n\
             ├── db  container running\n\
             ├── web container running\n\
             └── workers (one_for_one, 5 in 30s) running, 0 restarts\n\
             \x20   └── w1 container restarting\n"
        );
    }

    #[test]
    fn inner_subtrees_continue_the_branch_line() {
        let mut all = example();
        // workers in the middle: its children hang from a "│".
        if let Some(app) = all.iter_mut().find(|s| s.name == "app") {
            app.children.swap(1, 2);
        }
        all.push(supervisor("solo", "", ("one_for_one", 1, 5000), 1, vec![]));
        assert_eq!(
            Forest::new(&all).text(),
            "app (one_for_all, 3 in 10s) running, 2 restarts\n\
             ├── db  container running\n\
             ├── workers (one_for_one, 5 in 30s) running, 0 restarts\n\
             │   └── w1 container restarting\n\
             └── web container running\n\
             solo (one_for_one, 1 in 5s) running, 1 restart\n"
        );
    }

    #[test]
    fn unknown_orphaned_and_cyclic_supervisors_still_show() {
        let all = vec![
            supervisor(
                "a",
                "b",
                ("one_for_one", 1, 5000),
                0,
                vec![child("supervisor", "b", "running")],
            ),
            supervisor(
                "b",
                "a",
                ("one_for_one", 1, 5000),
                0,
                vec![
                    child("supervisor", "a", "running"),
                    child("supervisor", "gone", "failed"),
                ],
            ),
        ];
        assert_eq!(
            Forest::new(&all).text(),
            "a (one_for_one, 1 in 5s) running, 0 restarts\n\
             └── b (one_for_one, 1 in 5s) running, 0 restarts\n\
             \x20   ├── a    supervisor running\n\
             \x20   └── gone supervisor failed\n"
        );
        assert_eq!(Forest::new(&[]).text(), "");
    }

    #[test]
    fn json_nests_child_supervisors() {
        let all = example();
        let roots = Forest::new(&all).json();
        assert_eq!(roots.len(), 1);
        assert_eq!(
            roots[0],
            json!({"kind": "supervisor", "name": "app", "strategy": "one_for_all",
                   "intensity": 3, "period_ms": 10000, "state": "running", "restarts": 2,
                   "children": [
                       {"kind": "container", "name": "db", "state": "running"},
                       {"kind": "container", "name": "web", "state": "running"},
                       {"kind": "supervisor", "name": "workers", "strategy": "one_for_one",
                        "intensity": 5, "period_ms": 30000, "state": "running",
                        "restarts": 0, "children": [
                            {"kind": "container", "name": "w1", "state": "restarting"}]}]})
        );
    }
}
