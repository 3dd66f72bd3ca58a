//! `Duration`: Istio's duration fields (`timeout: 1.5s`, `interval: 5m`, `ttl: 100ms`).
//!
//! Istio's CRDs take Go duration strings (`300ms`, `1m30s`, `1h`); protobuf JSON adds the
//! fractional-seconds form (`0.5s`). We parse both and keep the original text for output.
//! The ">= 1ms" rule Istio applies to most duration fields lives in validation, not here.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration as written in a manifest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    value: StdDuration,
    text: String,
}

impl Duration {
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_go_duration(text).map(|value| Duration {
            value,
            text: text.to_string(),
        })
    }

    pub fn from_std(value: StdDuration) -> Self {
        let text = if value.subsec_nanos() == 0 {
            format!("{}s", value.as_secs())
        } else if value.as_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", value.as_millis())
        } else {
            format!("{}ns", value.as_nanos())
        };
        Duration { value, text }
    }

    pub fn as_std(&self) -> StdDuration {
        self.value
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", self.text)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"1.5s\", \"1m30s\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `2us`) or protobuf JSON duration (`1.5s`).
pub fn parse_go_duration(text: &str) -> Result<StdDuration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and unit (ns, us, ms, s, m, h), e.g. \"500ms\", \"1.5s\", \"1m30s\""
        )
    };
    let s = text.trim();
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(StdDuration::ZERO);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 315_576_000_000.0 {
        return Err(format!("invalid duration {text:?}: too large"));
    }
    Ok(StdDuration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_and_proto_forms() {
        let ms = |t: &str| parse_go_duration(t).unwrap().as_millis();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("0"), 0);
        assert_eq!(parse_go_duration("10us").unwrap().as_micros(), 10);
    }

    #[test]
    fn rejects_garbage() {
        for t in ["", "5", "5x", "-1s", "s", "1.2.3s", "ms5", "1e3s"] {
            assert!(parse_go_duration(t).is_err(), "{t}");
        }
    }

    #[test]
    fn serde_keeps_text() {
        let d: Duration = serde_json::from_value(serde_json::json!("1m30s")).unwrap();
        assert_eq!(d.as_std().as_secs(), 90);
        assert_eq!(serde_json::to_value(&d).unwrap(), "1m30s");
    }
}
