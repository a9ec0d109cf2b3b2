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

    pub fn label(self) -> String {
        match self {
            Level::One => "one".into(),
            Level::Quorum => "quorum".into(),
            Level::All => "all".into(),
            Level::Count(k) => k.to_string(),
        }
    }
}

/// Resolves a request's level string against the default, returning the
/// number of replicas needed and a metrics label.
pub fn resolve(s: &str, default: u32, n: u32) -> Result<(u32, String), InvalidInput> {
    match Level::parse(s)? {
        None => Ok((default, "default".into())),
        Some(l) => Ok((l.required(n)?, l.label())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_resolve() {
        assert_eq!(resolve("", 2, 3).unwrap().0, 2);
        assert_eq!(resolve("one", 2, 3).unwrap().0, 1);
        assert_eq!(resolve("QUORUM", 2, 5).unwrap().0, 3);
        assert_eq!(resolve("all", 2, 3).unwrap().0, 3);
        assert_eq!(resolve("3", 2, 3).unwrap().0, 3);
        assert!(resolve("4", 2, 3).is_err());
        assert!(resolve("0", 2, 3).is_err());
        assert!(resolve("most", 2, 3).is_err());
        assert!(resolve("-1", 2, 3).is_err());
    }
}
