//! `expect` matchers from TOML.

use crate::model::Matcher;

pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::json!(i),
        toml::Value::Float(x) => serde_json::json!(x),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect())
        }
    }
}

/// Turns a TOML matcher into a [`Matcher`], or says what was expected.
pub fn parse_matcher(v: &toml::Value) -> Result<Matcher, String> {
    let toml::Value::Table(t) = v else { return Ok(Matcher::Eq(toml_to_json(v))) };
    const OPS: &str = "one_of, ne, not_empty, same, gt, ge, lt, le, contains, excludes, len";
    if t.len() != 1 {
        return Err(format!("a matcher table holds exactly one of: {OPS}"));
    }
    let (op, arg) = t.iter().next().unwrap();
    let num = || {
        arg.as_integer()
            .map(|i| i as f64)
            .or(arg.as_float())
            .ok_or_else(|| format!("`{op}` takes a number"))
    };
    let yes = || match arg.as_bool() {
        Some(true) => Ok(()),
        _ => Err(format!("write `{op} = true`")),
    };
    Ok(match op.as_str() {
        "one_of" => match arg {
            toml::Value::Array(a) if !a.is_empty() => {
                Matcher::OneOf(a.iter().map(toml_to_json).collect())
            }
            _ => return Err("`one_of` takes a non-empty array".into()),
        },
        "ne" => Matcher::Ne(toml_to_json(arg)),
        "not_empty" => yes().map(|_| Matcher::NotEmpty)?,
        "same" => yes().map(|_| Matcher::Same)?,
        "gt" => Matcher::Gt(num()?),
        "ge" => Matcher::Ge(num()?),
        "lt" => Matcher::Lt(num()?),
        "le" => Matcher::Le(num()?),
        "contains" => Matcher::Contains(toml_to_json(arg)),
        "excludes" => Matcher::Excludes(toml_to_json(arg)),
        "len" => Matcher::Len(
            arg.as_integer().filter(|i| *i >= 0).ok_or("`len` takes a whole number")? as u64,
        ),
        other => return Err(format!("unknown matcher `{other}`; expected one of: {OPS}")),
    })
}
