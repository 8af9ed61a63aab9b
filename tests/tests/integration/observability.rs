//! The Grafana dashboards and Prometheus alert rules of `dashboards/`
//! against the metrics rsupd really exports.
//!
//! Every metric rsupd exports is declared in `server/src/metrics.rs`; the
//! dashboards and rules may query nothing else (STYLE.md, practice 15). A
//! metric renamed in code must break a test here, not a dashboard in
//! production:
//! * `dashboards_are_well_formed`: the JSON is a dashboard Grafana loads
//!   (unique panel ids, a schema version, `uid`s and titles), every query
//!   goes through the `${datasource}` variable, and every `$variable` a query
//!   uses is defined;
//! * `dashboards_query_only_exported_metrics`: every metric name in every
//!   PromQL expression of the dashboards and alert rules appears as a
//!   `# TYPE` of a real rsupd's `/metrics`, once a workload has made every
//!   metric family appear;
//! * `every_panel_query_returns_data_from_a_real_prometheus`: a real
//!   Prometheus scrapes that rsupd and answers every panel and variable
//!   query with data, and the alert rules fire for the OOM kill, the crash
//!   loop and the failed supervisor of the workload;
//! * `alert_rules_pass_promtool`: `promtool check rules` and the rules' own
//!   unit tests (`promtool test rules`).
//!
//! The metric names are found by a small PromQL tokenizer
//! ([`metric_names`]), not a full parser: identifiers that are not inside a
//! string, a label matcher `{...}`, a range `[...]` or a grouping list
//! (`by (...)`, `on (...)`, ...), not followed by `(` (functions and
//! aggregations) and not a keyword.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rsup_client::proto::ContainerState;
use rsup_tests::{
    Daemon, POLL_INTERVAL, Prometheus, TempDir, describe, eventually, http_get,
    output_with_timeout, stdout, unique_name,
};
use serde_json::Value;

/// The dashboards every deployment gets.
const DASHBOARDS: [&str; 2] = ["rsup-overview.json", "rsup-container.json"];
/// Template variables both dashboards must have (besides `datasource`).
const REQUIRED_VARIABLES: [&str; 3] = ["container", "network", "supervisor"];
/// What a panel's or target's data source must be: the `datasource` variable.
const DATASOURCE_REFS: [&str; 2] = ["${datasource}", "$datasource"];
/// Grafana's built-in variables the queries may use, and the values the
/// Prometheus test gives them.
const BUILTIN_VARIABLES: [(&str, &str); 3] = [
    ("__rate_interval", "10s"),
    ("__interval", "5s"),
    ("__range", "1m"),
];
/// Metrics a query may use that rsupd does not export: Prometheus makes
/// `up` for every scrape target.
const SYNTHETIC_METRICS: [&str; 1] = ["up"];
/// How long a query of the Prometheus test may take to return data: rate()
/// needs two scrapes in its window, and the alert rules one evaluation.
const QUERY_PATIENCE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ files

/// The repository's `dashboards/` directory.
fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dashboards")
}

fn rules_file() -> PathBuf {
    dashboards_dir().join("alerts").join("rsup.rules.yml")
}

fn rules_test_file() -> PathBuf {
    dashboards_dir().join("alerts").join("rsup.rules.test.yml")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A dashboard JSON file of `dashboards/`, parsed.
struct Dashboard {
    file: String,
    json: Value,
}

/// Every `*.json` of `dashboards/` (each one is a dashboard), sorted by
/// name; the required ones must be among them.
fn dashboards() -> Vec<Dashboard> {
    let dir = dashboards_dir();
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    for want in DASHBOARDS {
        assert!(
            files.iter().any(|f| f == want),
            "{want} missing from {}: {files:?}",
            dir.display()
        );
    }
    files
        .into_iter()
        .map(|file| {
            let text = read(&dir.join(&file));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
            Dashboard { file, json }
        })
        .collect()
}

/// Every panel of a dashboard, those nested in (collapsed) rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn variables(dashboard: &Value) -> &[Value] {
    dashboard["templating"]["list"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> Option<&'a Value> {
    variables(dashboard).iter().find(|v| v["name"] == name)
}

/// The uid a data source reference names: `{"type", "uid"}` (Grafana 8.3+)
/// or a plain string (older dashboards).
fn datasource_uid(ds: &Value) -> Option<&str> {
    ds.as_str().or_else(|| ds["uid"].as_str())
}

/// The query of a query variable: an object with `query` (the Prometheus
/// query editor) or a string.
fn variable_query(var: &Value) -> Option<&str> {
    var["query"]["query"]
        .as_str()
        .or_else(|| var["query"].as_str())
}

/// A PromQL expression found in `dashboards/`, and where.
#[derive(Debug, Clone)]
struct Query {
    /// `file: panel "title" target A` and the like, for messages.
    origin: String,
    expr: String,
    /// For a variable's `label_values(EXPR, LABEL)`: the label.
    label: Option<String>,
}

/// Every panel target's `expr` and every query variable's query (its PromQL
/// part) of a dashboard.
fn dashboard_queries(d: &Dashboard) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in all_panels(&d.json) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(Query {
                    origin: format!(
                        "{}: panel {} ({}) target {}",
                        d.file, panel["id"], panel["title"], target["refId"]
                    ),
                    expr: expr.to_owned(),
                    label: None,
                });
            }
        }
    }
    for var in variables(&d.json).iter().filter(|v| v["type"] == "query") {
        let Some(query) = variable_query(var) else {
            continue;
        };
        let (expr, label) = grafana_variable_query(query);
        if let Some(expr) = expr {
            out.push(Query {
                origin: format!("{}: variable {}", d.file, var["name"]),
                expr,
                label,
            });
        }
    }
    out
}

/// The PromQL expression and the label of a Grafana Prometheus variable
/// query: `label_values(EXPR, LABEL)`, `label_values(LABEL)` (no
/// expression), `query_result(EXPR)`, or a plain expression.
fn grafana_variable_query(query: &str) -> (Option<String>, Option<String>) {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return match split_last_top_level_comma(inner) {
            Some((expr, label)) => (Some(expr.trim().to_owned()), Some(label.trim().to_owned())),
            None => (None, Some(inner.trim().to_owned())),
        };
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return (Some(inner.trim().to_owned()), None);
    }
    if q.starts_with("label_names(") || q.starts_with("metrics(") {
        return (None, None);
    }
    (Some(q.to_owned()), None)
}

/// Splits at the last comma outside brackets and strings.
fn split_last_top_level_comma(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut last = None;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    last.map(|i| (&s[..i], &s[i + 1..]))
}

/// An alert rule's name and expression.
#[derive(Debug)]
struct Rule {
    alert: String,
    expr: String,
}

/// The alerting rules of a rules file. No YAML parser is at hand, so this
/// reads the subset the file uses: `- alert: NAME` followed by `expr:` with
/// the expression on the same line or as a block scalar (`|` or `>`) on the
/// lines indented below it. `promtool check rules` (in
/// `alert_rules_pass_promtool`) makes sure nothing else is there.
fn alert_rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut alert: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        i += 1;
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = Some(unquote(name.trim()).to_owned());
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        let expr = if rest.starts_with('|') || rest.starts_with('>') {
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            block.join("\n").trim().to_owned()
        } else {
            unquote(rest).to_owned()
        };
        let alert = alert
            .take()
            .unwrap_or_else(|| panic!("an expr: without an alert: before it: {expr}"));
        rules.push(Rule { alert, expr });
    }
    rules
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

// ------------------------------------------------------------------ PromQL

/// Keywords that are followed by a parenthesised list of label names.
const GROUPING_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other words that are never metric names: binary operators, modifiers,
/// aggregation operators (usable without a directly following `(`, as in
/// `sum by (x) (...)`) and number literals.
const KEYWORDS: [&str; 24] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "start",
    "end",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression (possibly with Grafana variables)
/// queries. See the module documentation for what counts.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}')?;
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']')?;
        } else if c == '$' {
            // A Grafana variable: ${name...} or $name.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}')?;
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (5m, 1h30m, 0x1f, 1e3).
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_'))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let paren_follows = chars.get(next) == Some(&'(');
            if GROUPING_KEYWORDS.contains(&lower.as_str()) {
                if paren_follows {
                    i = skip_group(&chars, next, '(', ')')?;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || paren_follows {
                // A keyword, a function or an aggregation: its arguments
                // are read on.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!(
        "unterminated string from {start} in {:?}",
        chars.iter().collect::<String>()
    ))
}

/// The index after the group opened at `start` (nested groups and strings
/// inside are skipped too).
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(chars, i)?;
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Ok(i + 1);
            }
        }
        i += 1;
    }
    Err(format!(
        "no closing {close:?} for the {open:?} at {start} in {:?}",
        chars.iter().collect::<String>()
    ))
}

/// A Grafana variable reference in a query: `$name`, `${name}`,
/// `${name:format}` or `[[name]]`; its byte range and name.
fn variable_refs(expr: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(offset) = expr[from..].find(['$', '[']) {
        let at = from + offset;
        let tail = &expr[at..];
        // (length of the reference, what is between its delimiters)
        let found = if let Some(body) = tail.strip_prefix("${") {
            body.find('}').map(|end| (3 + end, &body[..end]))
        } else if let Some(body) = tail.strip_prefix("[[") {
            body.find("]]").map(|end| (4 + end, &body[..end]))
        } else if let Some(body) = tail.strip_prefix('$') {
            let end = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            (end > 0).then_some((1 + end, &body[..end]))
        } else {
            None
        };
        match found {
            Some((len, inner)) => {
                let name = inner.split(':').next().unwrap_or_default().to_owned();
                refs.push((at..at + len, name));
                from = at + len;
            }
            // `$` and `[` are one byte: the next character starts after it.
            None => from = at + 1,
        }
    }
    refs
}

/// `expr` with every variable replaced by its value in `values`; an
/// unknown variable is an error.
fn fill_variables(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut at = 0;
    for (range, name) in variable_refs(expr) {
        let value = values
            .get(&name)
            .ok_or_else(|| format!("no value for ${name} in {expr:?}"))?;
        out.push_str(&expr[at..range.start]);
        out.push_str(value);
        at = range.end;
    }
    out.push_str(&expr[at..]);
    Ok(out)
}

// ------------------------------------------------------------------ metrics

/// `# TYPE name type` lines of an exposition: name -> type.
fn exported_families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Whether `name` is a series name of an exported family: the family
/// itself, or a histogram's/summary's `_bucket`, `_sum` or `_count`.
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if SYNTHETIC_METRICS.contains(&name) || families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            families
                .get(base)
                .is_some_and(|t| t == "histogram" || (t == "summary" && *suffix != "_bucket"))
        })
    })
}

/// Every metric name the dashboards and alert rules query, and where each
/// is used.
fn used_metrics() -> BTreeMap<String, Vec<String>> {
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |origin: &str, expr: &str| {
        let names = metric_names(expr).unwrap_or_else(|e| panic!("{origin}: cannot tokenize: {e}"));
        assert!(!names.is_empty(), "{origin}: no metric found in {expr:?}");
        for name in names {
            used.entry(name).or_default().push(origin.to_owned());
        }
    };
    for d in dashboards() {
        for q in dashboard_queries(&d) {
            add(&q.origin, &q.expr);
        }
    }
    let rules = alert_rules(&read(&rules_file()));
    assert!(
        !rules.is_empty(),
        "no alert rule found in {}",
        rules_file().display()
    );
    for rule in rules {
        add(&format!("rsup.rules.yml: alert {}", rule.alert), &rule.expr);
    }
    used
}

// ------------------------------------------------------------------ HTTP

/// `GET /metrics` of rsupd, or why not.
async fn scrape(addr: SocketAddr) -> Result<String, String> {
    match http_get(addr, "/metrics").await? {
        (200, body) => Ok(body),
        (code, body) => Err(format!("GET /metrics: {code}\n{body}")),
    }
}

// ------------------------------------------------------------------ workload

/// What the workload made, by name.
struct Workload {
    /// Running, CPU-bound (`--cpus 0.5`, so throttled), `-m 64m`,
    /// `--pids-limit 64`, with a health check, child of [`Workload::sup`]:
    /// every per-container series has data for it.
    hot: String,
    /// OOM-killed (`-m 32m`, `tail /dev/zero`).
    oom: String,
    /// Crash-looping (`--restart always`, `exit 1`).
    crash: String,
    /// A healthy supervisor with `hot` as its child.
    sup: String,
    /// A supervisor whose crash-looping child exceeds its intensity (1 in
    /// 60 s): it fails.
    esc: String,
}

/// `rsupctl run -d FLAGS -- COMMAND`, which must succeed.
fn run_detached(d: &Daemon, flags: &[&str], command: &[&str]) {
    let mut all = vec!["-d"];
    all.extend_from_slice(flags);
    let out = d.run(&all, command);
    assert!(out.status.success(), "run {flags:?}\n{}", describe(&out));
}

/// Starts the workload that makes every metric family rsupd has appear, and
/// waits (through rsupctl and the client) until its events have happened:
/// the OOM kill, a few crash-loop restarts, the supervisor's failure, a
/// health status.
async fn start_workload(d: &Daemon) -> Workload {
    let w = Workload {
        hot: unique_name("hot"),
        oom: unique_name("oom"),
        crash: unique_name("crash"),
        sup: "sup1".to_owned(),
        esc: "esc1".to_owned(),
    };
    d.ctl_ok([
        "supervisor",
        "create",
        &w.sup,
        "--strategy",
        "one_for_one",
        "--intensity",
        "5",
        "--period",
        "10s",
    ]);
    run_detached(
        d,
        &[
            "--name",
            &w.hot,
            "--supervisor",
            &w.sup,
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "64",
            "--health-cmd",
            "true",
            "--health-interval",
            "1s",
        ],
        &["sh", "-c", "while :; do :; done"],
    );
    let out = d.run(
        &["--name", &w.oom, "-m", "32m"],
        &["sh", "-c", "tail /dev/zero"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    run_detached(
        d,
        &[
            "--name",
            &w.crash,
            "--restart",
            "always",
            "--restart-max-delay",
            "2s",
        ],
        &["sh", "-c", "exit 1"],
    );
    d.ctl_ok([
        "supervisor",
        "create",
        &w.esc,
        "--strategy",
        "one_for_one",
        "--intensity",
        "1",
        "--period",
        "60s",
    ]);
    run_detached(
        d,
        &[
            "--name",
            &unique_name("escchild"),
            "--supervisor",
            &w.esc,
            "--restart",
            "always",
        ],
        &["sh", "-c", "exit 1"],
    );
    // A few more gRPC calls, one of them failing (NOT_FOUND), so that the
    // request counters have more than one code.
    d.ctl_ok(["ps", "-a"]);
    d.ctl_ok(["supervisor", "ls"]);
    let out = d.ctl(["inspect", "no-such-container"]);
    assert!(!out.status.success(), "{}", describe(&out));

    d.wait_state(&w.hot, ContainerState::Running, Duration::from_secs(20))
        .await;
    eventually(
        &format!("{} to report a health status", w.hot),
        Duration::from_secs(30),
        async || {
            let c = d
                .client()
                .inspect(&w.hot)
                .await
                .map_err(|e| e.to_string())?;
            match c.health.map(|h| h.status) {
                Some(s) if s == "healthy" => Ok(()),
                other => Err(format!("health {other:?}")),
            }
        },
    )
    .await;
    eventually(
        &format!("{} to be restarted 3 times", w.crash),
        Duration::from_secs(30),
        async || {
            let c = d
                .client()
                .inspect(&w.crash)
                .await
                .map_err(|e| e.to_string())?;
            if c.restart_count >= 3 {
                Ok(())
            } else {
                Err(format!("restart_count {}", c.restart_count))
            }
        },
    )
    .await;
    eventually(
        &format!("supervisor {} to fail", w.esc),
        Duration::from_secs(30),
        async || {
            let all = d
                .client()
                .list_supervisors()
                .await
                .map_err(|e| e.to_string())?;
            match all.iter().find(|s| s.name == w.esc) {
                Some(s) if s.state == "failed" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    w
}

// ------------------------------------------------------------------ Prometheus

/// An instant query of `prometheus`: `Ok(result vector)`, `Err(Retry)`
/// while Prometheus is not answering yet, `Err(Fatal)` when it rejects the
/// query.
async fn instant_query(prometheus: &mut Prometheus, query: &str) -> Result<Vec<Value>, QueryError> {
    if let Some(status) = prometheus.exited() {
        return Err(QueryError::Fatal(format!("prometheus exited: {status}")));
    }
    let path = Prometheus::query_path(query);
    let (code, body) = http_get(prometheus.addr(), &path)
        .await
        .map_err(QueryError::Retry)?;
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| QueryError::Retry(format!("{code}: {e}: {body}")))?;
    if v["status"] != "success" {
        // 400 (bad_data) and 422 (execution): the query itself is wrong.
        let error = format!("{code}: {} {}", v["errorType"], v["error"]);
        return Err(if matches!(code, 400 | 422) {
            QueryError::Fatal(error)
        } else {
            QueryError::Retry(error)
        });
    }
    v["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| QueryError::Fatal(format!("no result vector: {body}")))
}

#[derive(Debug)]
enum QueryError {
    Retry(String),
    Fatal(String),
}

/// Judges a query's result vector: `Err(why)` to try again.
type Accept = Box<dyn Fn(&[Value]) -> Result<(), String>>;

/// A query the Prometheus test evaluates, and what its result must show.
struct Check {
    origin: String,
    query: String,
    accept: Accept,
}

/// Evaluates every check until it passes, all in rounds under one deadline
/// (so that the checks wait for scrapes together); panics with every check
/// that failed or never passed.
async fn run_checks(prometheus: &mut Prometheus, checks: Vec<Check>, patience: Duration) {
    let deadline = Instant::now() + patience;
    let mut pending: Vec<(Check, String)> = checks
        .into_iter()
        .map(|c| (c, "not run".to_owned()))
        .collect();
    let mut failed: Vec<String> = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (check, _) in pending {
            match instant_query(prometheus, &check.query).await {
                Ok(result) => match (check.accept)(&result) {
                    Ok(()) => {}
                    Err(why) => still.push((check, why)),
                },
                Err(QueryError::Fatal(e)) => {
                    failed.push(format!(
                        "{}\n  query: {}\n  error: {e}",
                        check.origin, check.query
                    ));
                }
                Err(QueryError::Retry(e)) => still.push((check, e)),
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL * 10).await;
    }
    failed.extend(pending.into_iter().map(|(check, last)| {
        format!(
            "{}\n  query: {}\n  after {patience:?}: {last}",
            check.origin, check.query
        )
    }));
    assert!(
        failed.is_empty(),
        "{} queries failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn non_empty(result: &[Value]) -> Result<(), String> {
    if result.is_empty() {
        Err("empty result".to_owned())
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn promql_metric_names_are_extracted() {
    let cases: [(&str, &[&str]); 9] = [
        (
            "up{job=\"rsupd\"} == 0 or absent(up{job=\"rsupd\"})",
            &["up"],
        ),
        (
            "sum by (name, id) (rate(container_cpu_usage_seconds_total{name=~\"$container\"}[$__rate_interval]))",
            &["container_cpu_usage_seconds_total"],
        ),
        (
            "histogram_quantile(0.99, sum without (method) (rate(rsup_grpc_request_duration_seconds_bucket[5m])))",
            &["rsup_grpc_request_duration_seconds_bucket"],
        ),
        (
            "a / on (name) group_left (supervisor) b_total > bool 1e3 unless c offset 5m",
            &["a", "b_total", "c"],
        ),
        (
            "max_over_time(x{label=\"with } and { and \\\" inside\"}[1h:5m]) * 2",
            &["x"],
        ),
        (
            "label_replace(m, \"dst\", \"$1\", \"src\", \"(.*)\")",
            &["m"],
        ),
        ("sum(rate(m[1m])) or vector(0)", &["m"]),
        (
            "count_values(\"v\", build:info) AND ON() sum(n:rate5m)",
            &["build:info", "n:rate5m"],
        ),
        ("{__name__=~\"x.*\"}", &[]),
    ];
    for (expr, want) in cases {
        let got = metric_names(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want, "{expr}");
    }
    assert!(metric_names("m{a=\"b\"").is_err());

    assert_eq!(
        grafana_variable_query("label_values(rsup_container_info{job=~\"$job\", a=\"x,y\"}, name)"),
        (
            Some("rsup_container_info{job=~\"$job\", a=\"x,y\"}".to_owned()),
            Some("name".to_owned())
        )
    );
    assert_eq!(
        grafana_variable_query("label_values(job)"),
        (None, Some("job".to_owned()))
    );

    let values: BTreeMap<String, String> = [("container", "c1"), ("__rate_interval", "10s")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        fill_variables(
            "rate(m{name=~\"${container:regex}\"}[$__rate_interval]) + [[container]]",
            &values
        )
        .as_deref(),
        Ok("rate(m{name=~\"c1\"}[10s]) + c1")
    );
    assert!(fill_variables("m{name=\"$nope\"}", &values).is_err());

    let rules = alert_rules(
        "groups:\n  - name: g\n    rules:\n      - alert: One\n        expr: a > 1\n        for: 1m\n\
         \x20     - alert: Two\n        expr: |\n          b\n          / c\n        labels: {}\n\
         \x20     - alert: Three\n        expr: \"d == 0\"\n",
    );
    let got: Vec<(&str, &str)> = rules
        .iter()
        .map(|r| (r.alert.as_str(), r.expr.as_str()))
        .collect();
    assert_eq!(
        got,
        [("One", "a > 1"), ("Two", "b\n/ c"), ("Three", "d == 0")]
    );
}

#[test]
fn dashboards_are_well_formed() {
    let all = dashboards();
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for d in &all {
        let file = &d.file;
        let json = &d.json;
        let uid = json["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{file}: no uid");
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} used twice");
        let title = json["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "{file}: no title");
        assert!(
            titles.insert(title.to_owned()),
            "{file}: title {title:?} used twice"
        );
        let schema = json["schemaVersion"].as_u64();
        assert!(
            schema.is_some_and(|v| v >= 36),
            "{file}: schemaVersion {schema:?} (Grafana 9+ dashboards have 36 or more)"
        );

        // The data source is a variable, and only Prometheus.
        let ds = variable(json, "datasource")
            .unwrap_or_else(|| panic!("{file}: no `datasource` template variable"));
        assert_eq!(ds["type"], "datasource", "{file}: {ds}");
        assert_eq!(ds["query"], "prometheus", "{file}: {ds}");
        for name in REQUIRED_VARIABLES {
            assert!(
                variable(json, name).is_some(),
                "{file}: no `{name}` template variable"
            );
        }
        let mut defined: BTreeSet<String> = BUILTIN_VARIABLES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        for var in variables(json) {
            let name = var["name"].as_str().unwrap_or_default();
            assert!(!name.is_empty(), "{file}: a variable without a name: {var}");
            assert!(
                defined.insert(name.to_owned()),
                "{file}: variable {name} twice"
            );
            if var["type"] == "query" {
                let uid = datasource_uid(&var["datasource"]);
                assert!(
                    uid.is_some_and(|u| DATASOURCE_REFS.contains(&u)),
                    "{file}: variable {name} does not use ${{datasource}}: {}",
                    var["datasource"]
                );
                assert!(
                    variable_query(var).is_some_and(|q| !q.trim().is_empty()),
                    "{file}: variable {name} has no query"
                );
            }
        }

        // Panels: unique ids (rows' nested panels included), a place on the
        // grid, a title, and queries through ${datasource}.
        let mut ids = BTreeSet::new();
        let panels = all_panels(json);
        assert!(panels.iter().any(|p| !is_row(p)), "{file}: no panels");
        for p in &panels {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: a panel without a numeric id: {}", p["title"]));
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: panel {id} has no title");
            let grid = &p["gridPos"];
            let (x, w, h) = (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64());
            assert!(
                matches!((x, w, h), (Some(x), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24)
                    && grid["y"].is_u64(),
                "{file}: panel {id} ({title}) gridPos {grid}"
            );
            if is_row(p) {
                continue;
            }
            let uid = datasource_uid(&p["datasource"]);
            assert!(
                uid.is_some_and(|u| DATASOURCE_REFS.contains(&u)),
                "{file}: panel {id} ({title}) does not use ${{datasource}}: {}",
                p["datasource"]
            );
            let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            assert!(
                !targets.is_empty(),
                "{file}: panel {id} ({title}) has no queries"
            );
            let mut refs = BTreeSet::new();
            for t in targets {
                let uid = datasource_uid(&t["datasource"]);
                assert!(
                    uid.is_some_and(|u| DATASOURCE_REFS.contains(&u)),
                    "{file}: panel {id} ({title}) target {} does not use ${{datasource}}: {}",
                    t["refId"],
                    t["datasource"]
                );
                let ref_id = t["refId"].as_str().unwrap_or_default();
                assert!(
                    !ref_id.is_empty() && refs.insert(ref_id.to_owned()),
                    "{file}: panel {id} ({title}): refId {ref_id:?} missing or repeated"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{file}: panel {id} ({title}) target {ref_id} has no expr"
                );
            }
        }

        // Every variable a query uses is defined.
        for q in dashboard_queries(d) {
            for (_, name) in variable_refs(&q.expr) {
                assert!(
                    defined.contains(&name),
                    "{}: uses undefined variable ${name}: {}",
                    q.origin,
                    q.expr
                );
            }
        }
    }

    // Provisioning: a file provider and a Prometheus data source. (No YAML
    // parser here: the keys Grafana needs are looked for as text.)
    let prov = dashboards_dir().join("provisioning");
    let dash = read(&prov.join("dashboards.yaml"));
    for key in ["apiVersion: 1", "providers:", "type: file", "path:"] {
        assert!(
            dash.contains(key),
            "dashboards.yaml has no {key:?}:\n{dash}"
        );
    }
    let sources = read(&prov.join("datasources.yaml"));
    for key in ["apiVersion: 1", "datasources:", "type: prometheus", "url:"] {
        assert!(
            sources.contains(key),
            "datasources.yaml has no {key:?}:\n{sources}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboards_query_only_exported_metrics() {
    let used = used_metrics();
    // A tokenizer that finds next to nothing would make this test pass.
    assert!(
        used.len() >= 15,
        "only {} metrics found: {used:?}",
        used.len()
    );

    let (d, metrics) = Daemon::start_with_metrics(&[]).await;
    let _workload = start_workload(&d).await;
    // Container series appear at the first sample after a container starts:
    // poll until every used metric is exported, or report what is missing.
    let missing = |families: &BTreeMap<String, String>| -> Vec<String> {
        used.iter()
            .filter(|(name, _)| !is_exported(name, families))
            .map(|(name, origins)| format!("{name}, used by:\n    {}", origins.join("\n    ")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let families = loop {
        let body = scrape(metrics).await.unwrap_or_else(|e| panic!("{e}"));
        let families = exported_families(&body);
        if missing(&families).is_empty() || Instant::now() >= deadline {
            break families;
        }
        tokio::time::sleep(POLL_INTERVAL * 4).await;
    };
    let missing = missing(&families);
    let exported: Vec<String> = families.iter().map(|(n, t)| format!("{n} ({t})")).collect();
    assert!(
        missing.is_empty(),
        "the dashboards or alert rules query metrics rsupd does not export \
         (renamed in server/src/metrics.rs?):\n  {}\nrsupd exports:\n  {}",
        missing.join("\n  "),
        exported.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_query_returns_data_from_a_real_prometheus() {
    let (d, metrics) = Daemon::start_with_metrics(&[]).await;
    let w = start_workload(&d).await;
    let dir = TempDir::new();
    let mut prometheus = Prometheus::start(dir.path(), metrics, Some(&rules_file()));

    // A few scrapes first.
    eventually(
        "Prometheus to scrape rsupd 3 times",
        Duration::from_secs(30),
        async || {
            let result = instant_query(
                &mut prometheus,
                "count_over_time(up{job=\"rsupd\"}[1m]) >= 3",
            )
            .await
            .map_err(|e| format!("{e:?}"))?;
            non_empty(&result)
        },
    )
    .await;

    let values: BTreeMap<String, String> = [
        ("job", "rsupd"),
        ("container", w.hot.as_str()),
        ("supervisor", w.sup.as_str()),
        // No metric has a network label yet: the variable's All value.
        ("network", ".*"),
    ]
    .into_iter()
    .chain(BUILTIN_VARIABLES)
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    let mut checks = Vec::new();
    for dashboard in dashboards() {
        for q in dashboard_queries(&dashboard) {
            let query =
                fill_variables(&q.expr, &values).unwrap_or_else(|e| panic!("{}: {e}", q.origin));
            // A variable's values come from its label; network is a
            // placeholder that may have none.
            let label = q.label.clone().filter(|l| l != "network");
            checks.push(Check {
                origin: q.origin,
                query,
                accept: Box::new(move |result| {
                    non_empty(result)?;
                    match &label {
                        Some(l) if !result.iter().any(|r| r["metric"][l].is_string()) => {
                            Err(format!("no series has label {l}: {result:?}"))
                        }
                        _ => Ok(()),
                    }
                }),
            });
        }
    }
    // The alert rules fire (or are pending) for what the workload did.
    let alert = |name: &str, label: &str, value: &str| {
        let value = value.to_owned();
        let label = label.to_owned();
        Check {
            origin: format!("alert {name} for {label}={value}"),
            query: format!("ALERTS{{alertname=\"{name}\", {label}=\"{value}\"}}"),
            accept: Box::new(non_empty),
        }
    };
    checks.push(alert("RsupContainerOOMKilled", "name", &w.oom));
    checks.push(alert("RsupContainerCrashLooping", "name", &w.crash));
    checks.push(alert("RsupSupervisorFailed", "supervisor", &w.esc));
    run_checks(&mut prometheus, checks, QUERY_PATIENCE).await;

    // rsupd is up: no RsupdDown, and no alert for the healthy container.
    for query in [
        "ALERTS{alertname=\"RsupdDown\"}".to_owned(),
        format!("ALERTS{{name=\"{}\"}}", w.hot),
        format!("ALERTS{{supervisor=\"{}\"}}", w.sup),
    ] {
        let result = instant_query(&mut prometheus, &query)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:?}"));
        assert!(result.is_empty(), "{query}: {result:?}");
    }
    drop(prometheus);
}

#[test]
fn alert_rules_pass_promtool() {
    for (verb, file) in [("check", rules_file()), ("test", rules_test_file())] {
        let mut cmd = Command::new("promtool");
        cmd.args([verb, "rules"]).arg(&file);
        let out = output_with_timeout(cmd, Duration::from_secs(60)).unwrap_or_else(|e| {
            panic!("{e} (install Debian's `prometheus` for promtool; scripts/test.sh does)")
        });
        assert!(
            out.status.success(),
            "promtool {verb} rules {} failed\n{}",
            file.display(),
            describe(&out)
        );
        let said = stdout(&out);
        assert!(said.contains("SUCCESS"), "promtool said:\n{said}");
    }
}
