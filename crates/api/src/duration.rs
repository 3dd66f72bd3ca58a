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
    // Exact integer arithmetic in nanoseconds (as Go's time.ParseDuration), so sub-millisecond
    // parts such as "3.000000042s" are seen as written, not lost to float rounding.
    const MAX_NANOS: u128 = 315_576_000_000 * 1_000_000_000;
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number = &rest[..num_len];
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(bad());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let too_large = || format!("invalid duration {text:?}: too large");
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_large())?
        };
        let mut value = int.checked_mul(unit).ok_or_else(too_large)?;
        // Fraction digits scaled to the unit; digits finer than a nanosecond are dropped.
        let mut scale = unit;
        for d in frac_part.bytes() {
            if scale < 10 {
                break;
            }
            scale /= 10;
            value += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(too_large)?;
        if total > MAX_NANOS {
            return Err(too_large());
        }
    }
    Ok(StdDuration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    ))
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
        let ns = |t: &str| parse_go_duration(t).unwrap().as_nanos();
        assert_eq!(ns("3.000000042s"), 3_000_000_042);
        assert_eq!(ns("0.3s"), 300_000_000);
        assert_eq!(ns("1.5h"), 5_400_000_000_000);
        assert_eq!(ns(".5s"), 500_000_000);
        assert_eq!(
            ns("1.0000000009s"),
            1_000_000_000,
            "finer than 1ns is dropped"
        );
    }

    #[test]
    fn rejects_garbage() {
        for t in [
            "",
            "5",
            "5x",
            "-1s",
            "s",
            "1.2.3s",
            "ms5",
            "1e3s",
            ".s",
            "99999999999999999999999h",
        ] {
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
