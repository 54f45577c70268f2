//! A model's `scheduler/scheduler_config.json`, and diffusers' `from_config` merge.
//!
//! Picking a scheduler other than the model's own must behave like diffusers'
//! `XScheduler.from_config(model_config)` (`ConfigMixin.extract_init_dict` in
//! `diffusers/configuration_utils.py`): every field the target scheduler declares takes the
//! model config's value when the config has it, and the target's own default otherwise.
//! Fields the target does not declare are ignored, except that diffusers keeps them as
//! "hidden" config attributes, which DPM-Solver's Karras sigmas read (`sigma_min`,
//! `sigma_max`). Fields named in `_use_default_values` count as absent. So the config keeps
//! the file's raw fields and each scheduler reads the ones it declares, with its defaults,
//! through [`Fields`].
//!
//! Field values a scheduler does not implement are refused with [`Error::BadConfig`] naming
//! the field, so a checkpoint never runs with a silently different schedule. Only the
//! fields the chosen scheduler reads are checked, as in diffusers.

use serde_json::{Map, Value};

use crate::Error;

/// The fields of a `scheduler_config.json`, by their Hugging Face names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`: the model's own scheduler, e.g. `"PNDMScheduler"` (absent: none).
    pub class_name: Option<String>,
    fields: Map<String, Value>,
}

impl SchedulerConfig {
    /// Parses `scheduler_config.json`. diffusers writes it with Python's `json`, which
    /// spells infinities `-Infinity` / `Infinity` (DPM-Solver's `lambda_min_clipped`), and
    /// `NaN`; those are read as numbers here too.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let value: Value = serde_json::from_str(&quote_non_finite(json))
            .map_err(|e| Error::BadConfig(format!("scheduler_config.json: {e}")))?;
        Self::from_value(value)
    }

    /// A config from an already parsed JSON object.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let Value::Object(mut fields) = value else {
            return Err(Error::BadConfig(
                "scheduler_config.json: not a JSON object".into(),
            ));
        };
        let class_name = match fields.remove("_class_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(other) => {
                return Err(Error::BadConfig(format!(
                    "scheduler: _class_name = {other} is not a string"
                )));
            }
        };
        // extract_init_dict: fields the file lists as defaulted are treated as absent.
        if let Some(defaulted) = fields.remove("_use_default_values") {
            for name in defaulted
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                fields.remove(name);
            }
        }
        Ok(SchedulerConfig { class_name, fields })
    }

    /// The raw value of `field` as the file gives it, or `None` when absent.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// This config with `field` set, as a `from_config(config, field=value)` keyword would.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(field.to_string(), value.into());
        self
    }

    /// This config without `field`, so the target's default applies.
    pub fn without(mut self, field: &str) -> Self {
        self.fields.remove(field);
        self
    }
}

/// Turns the bare `NaN`, `Infinity` and `-Infinity` tokens Python's `json` writes into
/// strings that [`Fields::num`] reads back as numbers; text inside strings is left alone.
fn quote_non_finite(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Reads the fields one scheduler class declares, with that class's defaults; errors name
/// the class and the field.
pub(crate) struct Fields<'a> {
    config: &'a SchedulerConfig,
    /// The diffusers class reading, for messages.
    pub class: &'static str,
}

impl<'a> Fields<'a> {
    pub fn new(config: &'a SchedulerConfig, class: &'static str) -> Self {
        Fields { config, class }
    }

    fn bad(&self, field: &str, value: &Value, want: &str) -> Error {
        Error::BadConfig(format!(
            "scheduler: {field} = {value} is not supported by {} ({want})",
            self.class
        ))
    }

    /// A number; the strings `"NaN"`, `"Infinity"`, `"-Infinity"` are Python's non-finite floats.
    pub fn num(&self, field: &str, default: f64) -> Result<f64, Error> {
        match self.config.get(field) {
            None => Ok(default),
            Some(v) => number(v).ok_or_else(|| self.bad(field, v, "a number")),
        }
    }

    /// A finite number.
    pub fn finite(&self, field: &str, default: f64) -> Result<f64, Error> {
        let value = self.num(field, default)?;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(self.bad(field, &Value::String(value.to_string()), "a finite number"))
        }
    }

    /// A number or `null` (`None`), as diffusers' optional float fields.
    pub fn opt_finite(&self, field: &str) -> Result<Option<f64>, Error> {
        match self.config.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match number(v) {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.bad(field, v, "a finite number or null")),
            },
        }
    }

    /// A non-negative integer (JSON `1000` or `1000.0`).
    pub fn count(&self, field: &str, default: usize) -> Result<usize, Error> {
        match self.config.get(field) {
            None => Ok(default),
            Some(v) => match v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 0.0)
                    .map(|x| x as u64)
            }) {
                Some(n) => usize::try_from(n).map_err(|_| self.bad(field, v, "a smaller integer")),
                None => Err(self.bad(field, v, "a non-negative integer")),
            },
        }
    }

    /// A flag. `null` is false, as Python's truth test in diffusers reads it.
    pub fn flag(&self, field: &str, default: bool) -> Result<bool, Error> {
        match self.config.get(field) {
            None => Ok(default),
            Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.bad(field, v, "true or false")),
        }
    }

    /// A flag we only implement one value of.
    pub fn require_flag(&self, field: &str, default: bool, only: bool) -> Result<(), Error> {
        if self.flag(field, default)? == only {
            Ok(())
        } else {
            Err(self.bad(field, &Value::Bool(!only), &format!("only {only}")))
        }
    }

    /// One of `allowed` (the first is listed first in the message).
    pub fn choice(
        &self,
        field: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> Result<&'static str, Error> {
        let value = match self.config.get(field) {
            None => return Ok(default),
            Some(v) => v,
        };
        let want = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let name = value
            .as_str()
            .ok_or_else(|| self.bad(field, value, &format!("one of {want}")))?;
        allowed
            .iter()
            .copied()
            .find(|a| *a == name)
            .ok_or_else(|| self.bad(field, value, &format!("one of {want}")))
    }

    /// `clip_sample` (with this class's default) and, when set, `clip_sample_range`: the
    /// bound x₀ is clamped to, or `None` for no clipping (DDIM, LCM).
    pub fn clip_sample(&self, default: bool) -> Result<Option<f64>, Error> {
        if self.flag("clip_sample", default)? {
            Ok(Some(self.finite("clip_sample_range", 1.0)?))
        } else {
            Ok(None)
        }
    }

    /// A field that must be `null` or absent (`trained_betas`, `variance_type`).
    pub fn require_null(&self, field: &str) -> Result<(), Error> {
        match self.config.get(field) {
            None | Some(Value::Null) => Ok(()),
            Some(v) => Err(self.bad(field, v, "only null")),
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_floats_parse() {
        let config = SchedulerConfig::from_json(
            r#"{"lambda_min_clipped": -Infinity, "note": "NaN -Infinity", "x": NaN}"#,
        )
        .unwrap();
        let fields = Fields::new(&config, "Test");
        assert_eq!(
            fields.num("lambda_min_clipped", 0.0).unwrap(),
            f64::NEG_INFINITY
        );
        assert!(fields.num("x", 0.0).unwrap().is_nan());
        assert_eq!(
            config.get("note"),
            Some(&Value::String("NaN -Infinity".into()))
        );
        assert!(
            fields
                .finite("x", 0.0)
                .unwrap_err()
                .to_string()
                .contains("x = ")
        );
    }

    #[test]
    fn use_default_values_count_as_absent() {
        let config = SchedulerConfig::from_json(
            r#"{"_class_name": "DDIMScheduler", "clip_sample": false, "_use_default_values": ["clip_sample"]}"#,
        )
        .unwrap();
        assert_eq!(config.class_name.as_deref(), Some("DDIMScheduler"));
        assert_eq!(config.get("clip_sample"), None);
        assert!(
            Fields::new(&config, "DDIMScheduler")
                .flag("clip_sample", true)
                .unwrap()
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let config = SchedulerConfig::from_json(
            r#"{"steps_offset": "one", "timestep_spacing": "sometimes"}"#,
        )
        .unwrap();
        let fields = Fields::new(&config, "DDIMScheduler");
        let err = fields.count("steps_offset", 0).unwrap_err().to_string();
        assert!(
            err.contains("steps_offset") && err.contains("DDIMScheduler"),
            "{err}"
        );
        let err = fields
            .choice("timestep_spacing", "leading", &["leading", "trailing"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timestep_spacing") && err.contains("\"trailing\""),
            "{err}"
        );
    }
}
