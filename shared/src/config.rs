//! Reading configuration from the environment: every function validates all of its variables at
//! init and stops with a message that names the variable and what it accepts.

use std::str::FromStr;

/// An invalid configuration value. Its message names the variable, the value and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { variable, value: value.into(), expected: expected.into() }
    }
}

/// `result`, with an error logged as one readable line first (`invalid configuration:
/// VARIABLE=...: expected ...`): Lambda shows it with the init failure, where the error `main`
/// returns is only printed in its debug form.
pub fn reported<T>(function: &'static str, result: Result<T, ConfigError>) -> Result<T, ConfigError> {
    result.inspect_err(|err| tracing::error!(function, "{err}"))
}

/// Where variables come from: the process environment in Lambda, a map in tests (tests never
/// mutate the process environment, which other threads read).
pub trait VarSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl VarSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> VarSource for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The value of `name`, trimmed; `None` when unset or blank (an empty template parameter means
/// "use the default").
pub fn optional(source: &dyn VarSource, name: &str) -> Option<String> {
    source.var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `true`/`false` (any case); the default when unset.
pub fn bool_var(source: &dyn VarSource, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match optional(source, name) {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConfigError::new(name, v, "true or false")),
        },
    }
}

/// A number in `[min, max]`; the default when unset.
pub fn number_var<T>(source: &dyn VarSource, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match optional(source, name) {
        None => Ok(default),
        Some(v) => match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(ConfigError::new(name, v, format!("a number from {min} to {max}"))),
        },
    }
}

/// One of `choices` (exact, lower case); the default when unset.
pub fn choice_var<T: Copy>(
    source: &dyn VarSource,
    name: &'static str,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    match optional(source, name) {
        None => Ok(default),
        Some(v) => choices.iter().find(|(text, _)| *text == v).map(|(_, value)| *value).ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(text, _)| *text).collect();
            ConfigError::new(name, v, format!("one of {}", names.join(", ")))
        }),
    }
}

/// `PROTECT_TAG`: the tag key (any value, any letter case) that keeps a snapshot or an AMI;
/// default `amiguard:keep`.
pub fn protect_tag_var(source: &dyn VarSource) -> Result<String, ConfigError> {
    let Some(key) = optional(source, "PROTECT_TAG") else {
        return Ok(crate::tags::KEEP.to_string());
    };
    // Users cannot write `aws:` keys, so such a protect tag could never protect anything.
    let reserved = key.get(..4).is_some_and(|head| head.eq_ignore_ascii_case("aws:"));
    if key.chars().count() > 128 || reserved {
        return Err(ConfigError::new("PROTECT_TAG", key, "a tag key of 1 to 128 characters, not starting with aws:"));
    }
    Ok(key)
}

/// An optional SNS topic ARN in `name`: `None` when unset.
pub fn optional_topic_arn_var(source: &dyn VarSource, name: &'static str) -> Result<Option<String>, ConfigError> {
    match optional(source, name) {
        None => Ok(None),
        Some(arn) if crate::aws_words::is_sns_topic_arn(&arn) => Ok(Some(arn)),
        Some(arn) => {
            Err(ConfigError::new(name, arn, "an SNS topic ARN such as arn:aws:sns:us-east-1:123456789012:alerts"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn bool_accepts_true_false_any_case_and_defaults_when_unset_or_blank() {
        assert!(bool_var(&env(&[("X", "TRUE")]), "X", false).unwrap());
        assert!(!bool_var(&env(&[("X", "false")]), "X", true).unwrap());
        assert!(bool_var(&env(&[]), "X", true).unwrap());
        assert!(!bool_var(&env(&[("X", "  ")]), "X", false).unwrap());
    }

    #[test]
    fn bool_rejects_anything_else_naming_the_variable() {
        let err = bool_var(&env(&[("DRY_RUN", "yes")]), "DRY_RUN", false).unwrap_err();
        assert_eq!(err.variable, "DRY_RUN");
        assert_eq!(err.to_string(), "invalid configuration: DRY_RUN=\"yes\": expected true or false");
    }

    #[test]
    fn number_checks_range_and_syntax() {
        assert_eq!(number_var(&env(&[("N", "5")]), "N", 3u32, 1, 100).unwrap(), 5);
        assert_eq!(number_var(&env(&[]), "N", 3u32, 1, 100).unwrap(), 3);
        assert!(number_var(&env(&[("N", "0")]), "N", 3u32, 1, 100).is_err());
        assert!(number_var(&env(&[("N", "101")]), "N", 3u32, 1, 100).is_err());
        assert!(number_var(&env(&[("N", "-1")]), "N", 3u32, 1, 100).is_err());
        let err = number_var(&env(&[("N", "two")]), "N", 3u32, 1, 100).unwrap_err();
        assert_eq!(err.expected, "a number from 1 to 100");
        assert!(number_var(&env(&[("F", "0.5")]), "F", 0.1f64, 0.0, 1.0).is_ok());
        assert!(number_var(&env(&[("F", "NaN")]), "F", 0.1f64, 0.0, 1.0).is_err());
    }

    #[test]
    fn choice_lists_what_it_accepts() {
        let choices = [("tagged", 1), ("all", 2)];
        assert_eq!(choice_var(&env(&[("S", "all")]), "S", 1, &choices).unwrap(), 2);
        assert_eq!(choice_var(&env(&[]), "S", 1, &choices).unwrap(), 1);
        let err = choice_var(&env(&[("S", "some")]), "S", 1, &choices).unwrap_err();
        assert_eq!(err.expected, "one of tagged, all");
    }

    #[test]
    fn topic_arns_are_checked_and_optional() {
        let arn = "arn:aws:sns:eu-west-1:123456789012:amiguard-alerts";
        assert_eq!(optional_topic_arn_var(&env(&[("T", arn)]), "T").unwrap().as_deref(), Some(arn));
        assert_eq!(optional_topic_arn_var(&env(&[("T", " ")]), "T").unwrap(), None);
        for bad in [
            "alerts",
            "arn:aws:sqs:eu-west-1:123456789012:q",
            "arn:aws:sns:eu-west-1:1234:alerts",
            "arn:aws:sns::123456789012:a",
        ] {
            let err = optional_topic_arn_var(&env(&[("T", bad)]), "T").unwrap_err();
            assert_eq!(err.variable, "T", "{bad}");
        }
    }
}
