//! EventBridge event-pattern matching, enough of it to check the template's rules against the
//! sample events: exact values (a list of alternatives), nested objects, arrays in the event
//! (any element matches), and the `prefix`, `anything-but` and `exists` operators. Any other
//! operator is reported as unsupported rather than guessed.

use serde_json::Value;

/// Whether `event` matches `pattern`; `Err` names an operator this matcher does not know.
pub fn matches(pattern: &Value, event: &Value) -> Result<bool, String> {
    let Value::Object(fields) = pattern else { return Err(format!("a pattern must be an object, got {pattern}")) };
    for (key, expected) in fields {
        let actual = event.get(key);
        let ok = match expected {
            Value::Object(_) => match actual {
                Some(inner @ Value::Object(_)) => matches(expected, inner)?,
                _ => false,
            },
            Value::Array(alternatives) => field_matches(alternatives, actual)?,
            other => return Err(format!("pattern field `{key}` must be an array or an object, got {other}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field_matches(alternatives: &[Value], actual: Option<&Value>) -> Result<bool, String> {
    let values: Vec<&Value> = match actual {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(value) => vec![value],
        None => vec![],
    };
    for alternative in alternatives {
        if let Value::Object(operator) = alternative {
            if let Some(exists) = operator.get("exists") {
                if exists.as_bool() == Some(actual.is_some()) {
                    return Ok(true);
                }
                continue;
            }
        }
        for value in &values {
            if value_matches(alternative, value)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn value_matches(alternative: &Value, value: &Value) -> Result<bool, String> {
    match alternative {
        Value::Object(operator) => {
            if let Some(prefix) = operator.get("prefix").and_then(Value::as_str) {
                Ok(value.as_str().is_some_and(|v| v.starts_with(prefix)))
            } else if let Some(excluded) = operator.get("anything-but") {
                let excluded: Vec<&Value> = match excluded {
                    Value::Array(items) => items.iter().collect(),
                    single => vec![single],
                };
                Ok(!excluded.contains(&value))
            } else {
                Err(format!("unsupported pattern operator {alternative}"))
            }
        }
        exact => Ok(exact == value),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_values_nested_objects_and_arrays() {
        let pattern = json!({"source": ["aws.ec2"], "detail": {"state": ["stopped", "running"]}});
        assert!(matches(&pattern, &json!({"source": "aws.ec2", "detail": {"state": "stopped"}})).unwrap());
        assert!(!matches(&pattern, &json!({"source": "aws.ec2", "detail": {"state": "pending"}})).unwrap());
        assert!(!matches(&pattern, &json!({"source": "aws.s3", "detail": {"state": "stopped"}})).unwrap());
        assert!(!matches(&pattern, &json!({"source": "aws.ec2"})).unwrap());
        assert!(matches(&json!({"resources": ["a"]}), &json!({"resources": ["b", "a"]})).unwrap());
    }

    #[test]
    fn operators() {
        assert!(matches(&json!({"x": [{"prefix": "Run"}]}), &json!({"x": "RunInstances"})).unwrap());
        assert!(!matches(&json!({"x": [{"anything-but": ["a"]}]}), &json!({"x": "a"})).unwrap());
        assert!(matches(&json!({"x": [{"anything-but": "a"}]}), &json!({"x": "b"})).unwrap());
        assert!(matches(&json!({"x": [{"exists": false}]}), &json!({})).unwrap());
        assert!(!matches(&json!({"x": [{"exists": true}]}), &json!({})).unwrap());
        assert!(matches(&json!({"x": [{"numeric": [">", 1]}]}), &json!({"x": 2})).is_err());
    }
}
