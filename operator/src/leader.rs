//! Leader election on a `coordination.k8s.io/v1` Lease, so several operator
//! replicas can run and exactly one reconciles.
//!
//! The decision is a pure function of the current Lease ([`decide`]); writes use
//! the Lease's resourceVersion, so two candidates racing for an expired lease
//! cannot both win (one gets a 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// What to do with the current lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease object yet: create it.
    Create,
    /// Free or expired: take it over.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds a valid lease.
    Follow { holder: String },
}

/// Pure decision from the lease spec, our identity and the time.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(t) if t.as_second().saturating_add(duration) > now.as_second() => {
            Decision::Follow { holder }
        }
        _ => Decision::Acquire,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// One election round: returns whether we hold the lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, LeaseError> {
    let current = api.get_opt(&cfg.name).await?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        now,
    );
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let result = match (decision, current) {
        (Decision::Follow { .. }, _) => return Ok(false),
        (Decision::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        (d, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if d == Decision::Acquire {
                spec.holder_identity = Some(cfg.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(duration);
            spec.renew_time = Some(MicroTime(now));
            // `replace` sends the resourceVersion we read: a concurrent writer wins, we retry.
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        (_, None) => return Ok(false),
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives the lease up on shutdown so a standby takes over at once.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), LeaseError> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(now.as_second() - renewed_secs_ago).unwrap(),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(
            decide(Some(&spec(Some("me"), 100, now)), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(None, 1, now)), "me", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), 1, now)), "me", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 5, now)), "me", now),
            Decision::Follow {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 16, now)), "me", now),
            Decision::Acquire
        );
        let mut never = spec(Some("other"), 0, now);
        never.renew_time = None;
        assert_eq!(decide(Some(&never), "me", now), Decision::Acquire);
    }
}
