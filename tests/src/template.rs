//! Reading `template.yaml`: which functions it deploys, from which binary, and which
//! EventBridge patterns and schedules deliver events to each.

use serde_json::Value;

use crate::workspace_root;

/// A function resource of the template and what triggers it.
#[derive(Debug, Clone)]
pub struct TemplateFunction {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: the workspace package built for it.
    pub binary: Option<String>,
    pub code_uri: Option<Value>,
    /// Event patterns of its EventBridge rules (SAM `EventBridgeRule` events and
    /// `AWS::Events::Rule` resources that target it).
    pub patterns: Vec<Value>,
    /// Whether a schedule (SAM `Schedule`/`ScheduleV2`, or a rule with a `ScheduleExpression`)
    /// invokes it.
    pub scheduled: bool,
}

/// The template as JSON; CloudFormation's short tags (`!Ref x`) become `{"!Ref": x}`.
pub fn load() -> Value {
    let path = workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("template.yaml: {e}"));
    serde_json::to_value(yaml).unwrap_or_else(|e| panic!("template.yaml as JSON: {e}"))
}

pub fn functions(template: &Value) -> Vec<TemplateFunction> {
    let Some(resources) = template.get("Resources").and_then(Value::as_object) else { return Vec::new() };
    let mut functions: Vec<TemplateFunction> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(id, r)| {
            let events: Vec<&Value> =
                r["Properties"]["Events"].as_object().map(|e| e.values().collect()).unwrap_or_default();
            TemplateFunction {
                logical_id: id.clone(),
                binary: r["Metadata"]["BuildProperties"]["Binary"].as_str().map(str::to_string),
                code_uri: r["Properties"].get("CodeUri").cloned(),
                patterns: events
                    .iter()
                    .filter(|e| e["Type"] == "EventBridgeRule" || e["Type"] == "CloudWatchEvent")
                    .map(|e| e["Properties"]["Pattern"].clone())
                    .collect(),
                scheduled: events.iter().any(|e| e["Type"] == "Schedule" || e["Type"] == "ScheduleV2"),
            }
        })
        .collect();
    for rule in resources.values().filter(|r| r["Type"] == "AWS::Events::Rule") {
        let targets = rule["Properties"]["Targets"].as_array().cloned().unwrap_or_default();
        for target in targets {
            let Some(function) = functions.iter_mut().find(|f| targets_function(&target["Arn"], &f.logical_id)) else {
                continue;
            };
            if let Some(pattern) = rule["Properties"].get("EventPattern") {
                function.patterns.push(pattern.clone());
            }
            if rule["Properties"].get("ScheduleExpression").is_some() {
                function.scheduled = true;
            }
        }
    }
    functions
}

/// `!GetAtt Fn.Arn`, `{"Fn::GetAtt": ["Fn", "Arn"]}` or `!GetAtt [Fn, Arn]`.
fn targets_function(arn: &Value, logical_id: &str) -> bool {
    let attribute = arn.get("!GetAtt").or_else(|| arn.get("Fn::GetAtt"));
    match attribute {
        Some(Value::String(s)) => s == &format!("{logical_id}.Arn"),
        Some(Value::Array(parts)) => parts.first().and_then(Value::as_str) == Some(logical_id),
        _ => false,
    }
}

/// The workspace's function packages: the folders under `functions/`.
pub fn function_packages() -> Vec<String> {
    let dir = workspace_root().join("functions");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The sample events of `function`: `events/<function>.<case>.json`, by case name.
pub fn sample_events(function: &str) -> Vec<(String, Value)> {
    let dir = workspace_root().join("events");
    let prefix = format!("{function}.");
    let mut samples: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix) && name.ends_with(".json"))
        .map(|name| {
            let value = crate::sample_event(&name);
            (name, value)
        })
        .collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    samples
}

/// Every IAM action the function's inline policies allow, whatever the condition or the
/// template condition (`!If`) it stands under: the most it could ever be allowed. `Deny`
/// statements (defence in depth) grant nothing and are left out.
pub fn policy_actions(template: &Value, logical_id: &str) -> std::collections::BTreeSet<String> {
    let mut actions = std::collections::BTreeSet::new();
    collect_actions(&template["Resources"][logical_id]["Properties"]["Policies"], &mut actions);
    actions
}

fn collect_actions(value: &Value, actions: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) if map.get("Effect").and_then(Value::as_str) == Some("Deny") => {}
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "Action" {
                    match inner {
                        Value::String(action) => {
                            actions.insert(action.clone());
                        }
                        Value::Array(list) => actions.extend(list.iter().filter_map(Value::as_str).map(str::to_string)),
                        other => collect_actions(other, actions),
                    }
                } else {
                    collect_actions(inner, actions);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_actions(item, actions)),
        _ => {}
    }
}

/// The template resource that deploys the package `binary`.
pub fn function_for(template: &Value, binary: &str) -> TemplateFunction {
    functions(template)
        .into_iter()
        .find(|f| f.binary.as_deref() == Some(binary))
        .unwrap_or_else(|| panic!("template.yaml has no function built from `{binary}`"))
}

/// The statements of a rendered function's inline policies that mention `service` (as
/// `"ebs:"` or `"securityhub:"`): what the template grants it of that service.
pub fn statements_naming(rendered: &Value, logical_id: &str, service: &str) -> Vec<Value> {
    rendered["Resources"][logical_id]["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .filter(|statement| statement.to_string().contains(service))
        .collect()
}

/// The template as CloudFormation would deploy it with `overrides` for some parameters (the
/// others at their defaults): every condition evaluated, the resources and outputs whose condition
/// is false left out, and each `!If` replaced by its chosen branch (`AWS::NoValue` dropped).
pub fn render(template: &Value, overrides: &[(&str, &str)]) -> Value {
    let parameter = |name: &str| -> Value {
        overrides.iter().find(|(n, _)| *n == name).map(|(_, v)| Value::String((*v).to_string())).unwrap_or_else(|| {
            match &template["Parameters"][name]["Default"] {
                Value::Number(n) => Value::String(n.to_string()),
                Value::Null => panic!("parameter {name} has no default and no value"),
                other => other.clone(),
            }
        })
    };
    let conditions = template["Conditions"].as_object().cloned().unwrap_or_default();
    let mut rendered = template.clone();
    let condition = |name: &str| evaluate_condition(&conditions, name, &parameter);
    for section in ["Resources", "Outputs"] {
        if let Some(entries) = rendered[section].as_object_mut() {
            entries.retain(|_, entry| entry["Condition"].as_str().is_none_or(condition));
            for entry in entries.values_mut() {
                *entry = choose_branches(entry, &condition);
            }
        }
    }
    rendered
}

fn evaluate_condition(
    conditions: &serde_json::Map<String, Value>,
    name: &str,
    parameter: &dyn Fn(&str) -> Value,
) -> bool {
    let definition = conditions.get(name).unwrap_or_else(|| panic!("no condition {name}"));
    evaluate(conditions, definition, parameter)
}

fn evaluate(
    conditions: &serde_json::Map<String, Value>,
    expression: &Value,
    parameter: &dyn Fn(&str) -> Value,
) -> bool {
    let value = |v: &Value| -> Value {
        match v.get("!Ref").or_else(|| v.get("Ref")) {
            Some(Value::String(name)) => parameter(name),
            _ => match v {
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            },
        }
    };
    let args = |key: &str| expression.get(format!("!{key}")).or_else(|| expression.get(format!("Fn::{key}")));
    if let Some(Value::Array(pair)) = args("Equals") {
        return value(&pair[0]) == value(&pair[1]);
    }
    if let Some(Value::Array(inner)) = args("Not") {
        return !evaluate(conditions, &inner[0], parameter);
    }
    if let Some(Value::Array(all)) = args("And") {
        return all.iter().all(|e| evaluate(conditions, e, parameter));
    }
    if let Some(Value::Array(any)) = args("Or") {
        return any.iter().any(|e| evaluate(conditions, e, parameter));
    }
    if let Some(Value::String(name)) = expression.get("!Condition").or_else(|| expression.get("Condition")) {
        return evaluate_condition(conditions, name, parameter);
    }
    panic!("a condition this renderer does not know: {expression}")
}

fn is_no_value(value: &Value) -> bool {
    value.get("!Ref").or_else(|| value.get("Ref")).and_then(Value::as_str) == Some("AWS::NoValue")
}

fn choose_branches(value: &Value, condition: &dyn Fn(&str) -> bool) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(branches)) = map.get("!If").or_else(|| map.get("Fn::If")) {
                let chosen =
                    if condition(branches[0].as_str().unwrap_or_default()) { &branches[1] } else { &branches[2] };
                return choose_branches(chosen, condition);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), choose_branches(v, condition)))
                    .filter(|(_, v)| !is_no_value(v))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| choose_branches(v, condition)).filter(|v| !is_no_value(v)).collect())
        }
        other => other.clone(),
    }
}

/// A metric a dashboard widget shows: a row of its `metrics`, or the schema of a `SEARCH`
/// expression in one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownMetric {
    /// The widget's title.
    pub widget: String,
    pub namespace: String,
    pub name: String,
    /// Each dimension with its value; `None` for one a `SEARCH` leaves open (every value shows).
    pub dimensions: Vec<(String, Option<String>)>,
}

impl ShownMetric {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// The dimension names, sorted (CloudWatch tells metrics apart by the set, not the order).
    pub fn dimension_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.dimensions.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }
}

/// The template's `AWS::CloudWatch::Dashboard`, read as CloudFormation would send it: its
/// `DashboardBody` is a `!Sub` of a JSON string.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub logical_id: String,
    /// The body as JSON; the `${...}` substitutions stay in their strings as written.
    pub body: Value,
    /// Every `${X}` the `!Sub` substitutes (`${!X}`, a literal `${X}`, is none).
    pub substitutions: Vec<String>,
    pub metrics: Vec<ShownMetric>,
}

/// The one dashboard of the template.
pub fn dashboard(template: &Value) -> Dashboard {
    let resources = template["Resources"].as_object().expect("Resources");
    let dashboards: Vec<(&String, &Value)> =
        resources.iter().filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Dashboard").collect();
    assert_eq!(dashboards.len(), 1, "one AWS::CloudWatch::Dashboard");
    let (logical_id, resource) = dashboards[0];
    let text = resource["Properties"]["DashboardBody"]["!Sub"]
        .as_str()
        .unwrap_or_else(|| panic!("{logical_id}: DashboardBody must be a !Sub of a JSON string"));
    let substitutions = substitutions(text);
    let body: Value = serde_json::from_str(&text.replace("${!", "${"))
        .unwrap_or_else(|e| panic!("{logical_id}: DashboardBody is not JSON: {e}"));
    let mut metrics = Vec::new();
    for widget in body["widgets"].as_array().into_iter().flatten().filter(|w| w["type"] == "metric") {
        let title = widget["properties"]["title"].as_str().unwrap_or_default().to_string();
        for row in widget["properties"]["metrics"].as_array().into_iter().flatten() {
            metrics.push(shown_metric(&title, row));
        }
    }
    Dashboard { logical_id: logical_id.clone(), body, substitutions, metrics }
}

/// `${X}` in a `!Sub` string: the names it substitutes.
fn substitutions(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        if rest.starts_with('!') {
            continue;
        }
        let end = rest.find('}').unwrap_or_else(|| panic!("an unclosed ${{ in the dashboard body"));
        found.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    found
}

/// One row of a widget's `metrics`: `[namespace, name, dimension, value, ..., {options}]`, or
/// `[{"expression": "SEARCH('{namespace,dimension,...} MetricName=\"name\" dimension=\"value\"', ...)"}]`.
fn shown_metric(widget: &str, row: &Value) -> ShownMetric {
    let items = row.as_array().unwrap_or_else(|| panic!("{widget}: a metrics row is not a list: {row}"));
    if let Some(expression) = items.first().and_then(|first| first["expression"].as_str()) {
        return searched_metric(widget, expression);
    }
    let strings: Vec<&str> = items.iter().map_while(Value::as_str).collect();
    assert!(
        strings.len() >= 2 && strings.len().is_multiple_of(2),
        "{widget}: a row is [namespace, name, dimension, value, ...]: {row}"
    );
    assert!(!strings.contains(&"."), "{widget}: write each row in full (no \".\" shorthand): {row}");
    ShownMetric {
        widget: widget.to_string(),
        namespace: strings[0].to_string(),
        name: strings[1].to_string(),
        dimensions: strings[2..].chunks(2).map(|pair| (pair[0].to_string(), Some(pair[1].to_string()))).collect(),
    }
}

/// The `SEARCH('...')` of `expression`, alone or inside metric math over its series (the
/// organisation's dashboard sums each one: `SUM(SEARCH('...', 'Sum', 3600))`).
fn searched_metric(widget: &str, expression: &str) -> ShownMetric {
    let query = expression
        .find("SEARCH('")
        .map(|start| &expression[start + "SEARCH('".len()..])
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("{widget}: only SEARCH('...') expressions are read: {expression}"));
    let (schema, terms) = query
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
        .unwrap_or_else(|| panic!("{widget}: a SEARCH names its schema {{namespace,dimension,...}}: {query}"));
    let mut schema = schema.split(',').map(str::trim);
    let namespace = schema.next().unwrap_or_default().to_string();
    let mut dimensions: Vec<(String, Option<String>)> = schema.map(|d| (d.to_string(), None)).collect();
    let mut name = None;
    for term in terms.split_whitespace() {
        let (key, value) =
            term.split_once('=').unwrap_or_else(|| panic!("{widget}: a SEARCH term is key=\"value\": {term}"));
        let value = value.trim_matches('"').to_string();
        if key == "MetricName" {
            name = Some(value);
        } else {
            let dimension = dimensions
                .iter_mut()
                .find(|(d, _)| d == key)
                .unwrap_or_else(|| panic!("{widget}: {key} is not in the SEARCH's schema"));
            dimension.1 = Some(value);
        }
    }
    ShownMetric {
        widget: widget.to_string(),
        namespace,
        name: name.unwrap_or_else(|| panic!("{widget}: a SEARCH must name its MetricName: {query}")),
        dimensions,
    }
}

/// The metrics `function` emits (its `METRIC_NAMES`) and the dimensions besides `Function` each
/// is published under (its `METRIC_DIMENSIONS`).
pub fn emitted_metrics(
    function: &str,
) -> (&'static [&'static str], &'static [(&'static str, &'static [&'static str])]) {
    match function {
        orphan_snapshot_sweeper::FUNCTION => {
            (orphan_snapshot_sweeper::metrics::METRIC_NAMES, orphan_snapshot_sweeper::metrics::METRIC_DIMENSIONS)
        }
        snapshot_on_stop::FUNCTION => (snapshot_on_stop::metrics::METRIC_NAMES, &[]),
        untrusted_ami_alert::FUNCTION => {
            (untrusted_ami_alert::metrics::METRIC_NAMES, untrusted_ami_alert::metrics::METRIC_DIMENSIONS)
        }
        other => panic!("{other:?} is no function of the workspace"),
    }
}
