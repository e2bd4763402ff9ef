//! Typed quality SLA values: `1s`-style durations and `99.999%`-style percentages.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest acceptable event age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FreshnessSla(pub Duration);

impl FromStr for FreshnessSla {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value = Decimal::from_str(number).map_err(|_| format!("{s:?} is not a duration such as 1s, 500ms, 5m or 1h"))?;
        let millis_per_unit = match unit {
            "ms" => Decimal::ONE,
            "s" => Decimal::from(1_000),
            "m" => Decimal::from(60_000),
            "h" => Decimal::from(3_600_000),
            "" => return Err(format!("{s:?} has no unit: write e.g. {number}s")),
            other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m or h)")),
        };
        let micros = (value * millis_per_unit * Decimal::from(1_000)).trunc();
        let micros = u64::try_from(micros).map_err(|_| format!("{s:?} is out of range"))?;
        if micros == 0 {
            return Err(format!("{s:?} must be greater than zero"));
        }
        Ok(Self(Duration::from_micros(micros)))
    }
}

impl fmt::Display for FreshnessSla {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1_000) { write!(f, "{}s", ms / 1_000) } else { write!(f, "{ms}ms") }
    }
}

/// A percentage in `[0, 100]`, kept exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(pub Decimal);

impl Percent {
    /// The percentage as a fraction in `[0, 1]`.
    pub fn fraction(self) -> Decimal {
        self.0 / Decimal::ONE_HUNDRED
    }

    /// Whether `part` out of `whole` meets this threshold, computed exactly in integers.
    pub fn is_met_by(self, part: u64, whole: u64) -> bool {
        if whole == 0 {
            return true;
        }
        Decimal::from(part) * Decimal::ONE_HUNDRED >= self.0 * Decimal::from(whole)
    }
}

impl FromStr for Percent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let number = t.strip_suffix('%').ok_or_else(|| format!("{t:?} is not a percentage such as 99.9%"))?;
        let value = Decimal::from_str(number.trim()).map_err(|_| format!("{t:?} is not a percentage such as 99.9%"))?;
        if value < Decimal::ZERO || value > Decimal::ONE_HUNDRED {
            return Err(format!("{t:?} must be between 0% and 100%"));
        }
        Ok(Self(value.normalize()))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}
serde_via_str!(FreshnessSla);
serde_via_str!(Percent);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_values() -> Result<(), String> {
        assert_eq!("1s".parse::<FreshnessSla>()?.0, Duration::from_secs(1));
        assert_eq!("5s".parse::<FreshnessSla>()?.0, Duration::from_secs(5));
        assert_eq!("250ms".parse::<FreshnessSla>()?.0, Duration::from_millis(250));
        assert_eq!("1.5m".parse::<FreshnessSla>()?.0, Duration::from_secs(90));
        assert_eq!("100%".parse::<Percent>()?.0, Decimal::ONE_HUNDRED);
        assert_eq!("99.999%".parse::<Percent>()?.0, Decimal::new(99_999, 3));
        Ok(())
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        assert!("1".parse::<FreshnessSla>().is_err_and(|e| e.contains("no unit")));
        assert!("1d".parse::<FreshnessSla>().is_err_and(|e| e.contains("unknown unit")));
        assert!("0s".parse::<FreshnessSla>().is_err());
        assert!("100".parse::<Percent>().is_err());
        assert!("101%".parse::<Percent>().is_err());
        assert!("-1%".parse::<Percent>().is_err());
    }

    #[test]
    fn threshold_is_exact() -> Result<(), String> {
        let p: Percent = "99.999%".parse()?;
        assert!(p.is_met_by(99_999, 100_000));
        assert!(!p.is_met_by(99_998, 100_000));
        let full: Percent = "100%".parse()?;
        assert!(full.is_met_by(6, 6));
        assert!(!full.is_met_by(5, 6));
        Ok(())
    }
}
