//! Conversions between Kubernetes `Time` and Unix milliseconds (what the
//! planner and the Admin API use).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub fn from_unix_ms(ms: i64) -> Time {
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

pub fn to_unix_ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

pub fn now_unix_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            to_unix_ms(&from_unix_ms(1_700_000_000_123)),
            1_700_000_000_123
        );
        assert!(now_unix_ms() > 1_700_000_000_000);
    }
}
