//! Per-request consistency levels: `one | quorum | all | <integer ≤ N>`.

use super::error::InvalidInput;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    One,
    Quorum,
    All,
    Count(u32),
}

impl Level {
    /// Parses a level; empty means "the cluster default" (`None`).
    pub fn parse(s: &str) -> Result<Option<Level>, InvalidInput> {
        let t = s.trim();
        Ok(Some(match t.to_ascii_lowercase().as_str() {
            "" => return Ok(None),
            "one" => Level::One,
            "quorum" => Level::Quorum,
            "all" => Level::All,
            other => match other.parse::<u32>() {
                Ok(0) => {
                    return Err(InvalidInput::Consistency {
                        value: s.into(),
                        reason: "must be at least 1".into(),
                    });
                }
                Ok(n) => Level::Count(n),
                Err(_) => {
                    return Err(InvalidInput::Consistency {
                        value: s.into(),
                        reason: "expected one, quorum, all or an integer".into(),
                    });
                }
            },
        }))
    }

    /// How many replicas this level needs with replication factor `n`.
    pub fn required(self, n: u32) -> Result<u32, InvalidInput> {
        let k = match self {
            Level::One => 1,
            Level::Quorum => n / 2 + 1,
            Level::All => n,
            Level::Count(k) => k,
        };
        if k > n {
            return Err(InvalidInput::Consistency {
                value: k.to_string(),
                reason: format!("exceeds the replication factor N={n}"),
            });
        }
        Ok(k)
    }

    /// The level as a request field ("one", "quorum", "all" or the count).
    pub fn label_for_wire(self) -> String {
        match self {
            Level::Count(k) => k.to_string(),
            l => l.label().to_string(),
        }
    }

    /// The metrics label: a closed set, so no request can add a series.
    pub fn label(self) -> &'static str {
        const COUNTS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
            Level::Count(k) => COUNTS.get(k as usize).copied().unwrap_or("10+"),
        }
    }
}

/// The metrics label of a request's level (`None`: the cluster default).
pub fn label(l: Option<Level>) -> &'static str {
    l.map_or("default", Level::label)
}

/// Replicas needed for level `l` (`None`: `default`) with replication factor `n`.
pub fn required(l: Option<Level>, default: u32, n: u32) -> Result<u32, InvalidInput> {
    match l {
        None => Ok(default),
        Some(l) => l.required(n),
    }
}

/// Parses and resolves a level string (tests and forwarded requests).
pub fn resolve(s: &str, default: u32, n: u32) -> Result<u32, InvalidInput> {
    required(Level::parse(s)?, default, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_resolve() {
        assert_eq!(resolve("", 2, 3).unwrap(), 2);
        assert_eq!(resolve("one", 2, 3).unwrap(), 1);
        assert_eq!(resolve("QUORUM", 2, 5).unwrap(), 3);
        assert_eq!(resolve("all", 2, 3).unwrap(), 3);
        assert_eq!(resolve("3", 2, 3).unwrap(), 3);
        assert!(resolve("4", 2, 3).is_err());
        assert!(resolve("0", 2, 3).is_err());
        assert!(resolve("most", 2, 3).is_err());
        assert!(resolve("-1", 2, 3).is_err());
    }

    #[test]
    fn labels_are_a_closed_set() {
        assert_eq!(label(None), "default");
        assert_eq!(label(Level::parse("2").unwrap()), "2");
        assert_eq!(label(Level::parse("12345").unwrap()), "10+");
        assert_eq!(label(Level::parse("ALL").unwrap()), "all");
    }
}
