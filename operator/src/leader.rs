//! Leader election on a `coordination.k8s.io/v1` Lease, so several operator
//! replicas can run and at most one reconciles at any moment.
//!
//! The timing is client-go's: a follower takes over only when the lease record
//! has not changed for a whole `lease_duration`, measured on its own clock from
//! when it last saw the record change (never from the renew time another
//! machine wrote: clocks differ); the leader stops reconciling as soon as it
//! has failed to renew for `renew_deadline`, which is shorter than
//! `lease_duration`. So the old leader has stopped before any standby can
//! start. Writes carry the Lease's resourceVersion, so two candidates racing
//! for an expired lease cannot both win (one gets a 409 Conflict).

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
    /// How long followers wait, from the last change of the lease they saw,
    /// before taking over.
    pub lease_duration: Duration,
    /// The leader stops reconciling when it could not renew for this long.
    pub renew_deadline: Duration,
    /// Time between election rounds (and renewals).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's proportions: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: &str, namespace: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }

    pub fn validate(&self) -> Result<(), LeaseError> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(LeaseError::BadTiming {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "leader election needs retry period ({retry_period:?}) < renew deadline ({renew_deadline:?}) < lease duration ({lease_duration:?})"
    )]
    BadTiming {
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    },
}

/// What to do with the current lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease object yet: create it.
    Create,
    /// Free, or unchanged for a whole lease duration: take it over.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds it.
    Follow { holder: String },
}

/// One candidate's election state. Times are milliseconds of a monotonic
/// clock the caller supplies (tests drive it by hand).
#[derive(Debug, Clone)]
pub struct Elector {
    pub cfg: LeaseConfig,
    /// The lease record last seen (holder, renew time) and when it was first seen so.
    observed: Option<(String, Option<Timestamp>)>,
    observed_at_ms: u64,
    /// When this replica last renewed successfully as leader.
    renewed_at_ms: Option<u64>,
}

impl Elector {
    pub fn new(cfg: LeaseConfig) -> Self {
        Self {
            cfg,
            observed: None,
            observed_at_ms: 0,
            renewed_at_ms: None,
        }
    }

    /// Pure decision: records what the lease says and decides.
    pub fn decide(&mut self, lease: Option<&LeaseSpec>, now_ms: u64) -> Decision {
        let Some(spec) = lease else {
            return Decision::Create;
        };
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = (holder.clone(), spec.renew_time.as_ref().map(|t| t.0));
        if self.observed.as_ref() != Some(&record) {
            self.observed = Some(record);
            self.observed_at_ms = now_ms;
        }
        if holder == self.cfg.identity {
            return Decision::Renew;
        }
        if holder.is_empty() {
            return Decision::Acquire;
        }
        let duration = u64::try_from(self.cfg.lease_duration.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(self.observed_at_ms) >= duration {
            Decision::Acquire
        } else {
            Decision::Follow { holder }
        }
    }

    /// The leader has not renewed within the renew deadline: it must stop
    /// reconciling now, before a follower may take over.
    pub fn must_stop(&self, now_ms: u64) -> bool {
        let deadline = u64::try_from(self.cfg.renew_deadline.as_millis()).unwrap_or(u64::MAX);
        self.renewed_at_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= deadline)
    }

    /// One election round: whether this replica holds the lease afterwards.
    /// `wall` is only written into the lease (for humans and other tools).
    pub async fn round(
        &mut self,
        api: &Api<Lease>,
        now_ms: u64,
        wall: Timestamp,
    ) -> Result<bool, LeaseError> {
        let current = api.get_opt(&self.cfg.name).await?;
        let decision = self.decide(current.as_ref().and_then(|l| l.spec.as_ref()), now_ms);
        let duration = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (decision, current) {
            (Decision::Follow { .. }, _) => {
                self.renewed_at_ms = None;
                return Ok(false);
            }
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(wall)),
                        renew_time: Some(MicroTime(wall)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            (d, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if d == Decision::Acquire {
                    spec.holder_identity = Some(self.cfg.identity.clone());
                    spec.acquire_time = Some(MicroTime(wall));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime(wall));
                // `replace` sends the resourceVersion we read: a concurrent writer wins, we retry.
                api.replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(()) => {
                self.renewed_at_ms = Some(now_ms);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
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

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    fn elector(id: &str) -> Elector {
        Elector::new(LeaseConfig::new("l", "ns", id, Duration::from_secs(15)))
    }

    #[test]
    fn timing_follows_client_go() {
        let cfg = LeaseConfig::new("l", "ns", "me", Duration::from_secs(15));
        assert_eq!(cfg.renew_deadline, Duration::from_secs(10));
        assert_eq!(cfg.retry_period, Duration::from_secs(2));
        cfg.validate().unwrap();
        let mut bad = cfg.clone();
        bad.renew_deadline = Duration::from_secs(15);
        assert!(matches!(bad.validate(), Err(LeaseError::BadTiming { .. })));
    }

    #[test]
    fn decisions() {
        let mut e = elector("me");
        assert_eq!(e.decide(None, 0), Decision::Create);
        assert_eq!(e.decide(Some(&spec(Some("me"), 1)), 0), Decision::Renew);
        assert_eq!(e.decide(Some(&spec(None, 1)), 0), Decision::Acquire);
        assert_eq!(e.decide(Some(&spec(Some(""), 1)), 0), Decision::Acquire);
        // Someone else's lease, first seen at t=1s: followed until it has not
        // changed for 15 s of this replica's clock.
        let other = spec(Some("other"), 1);
        let follow = Decision::Follow {
            holder: "other".into(),
        };
        assert_eq!(e.decide(Some(&other), 1_000), follow);
        assert_eq!(e.decide(Some(&other), 15_999), follow);
        assert_eq!(e.decide(Some(&other), 16_000), Decision::Acquire);
        // A renewal restarts the wait.
        assert_eq!(e.decide(Some(&spec(Some("other"), 20)), 17_000), follow);
        assert_eq!(e.decide(Some(&spec(Some("other"), 20)), 31_000), follow);
    }

    #[test]
    fn a_renew_time_from_a_skewed_clock_does_not_expire_a_live_lease() {
        // The holder's clock is an hour behind: its renew time looks ancient.
        // Judged by that time, the lease would be taken at once while the
        // holder is alive and reconciling.
        let mut e = elector("me");
        let stale = spec(Some("other"), 1_700_000_000 - 3600);
        assert!(matches!(
            e.decide(Some(&stale), 5_000),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn the_leader_stops_before_any_follower_may_start() {
        let e = {
            let mut e = elector("leader");
            e.renewed_at_ms = Some(0);
            e
        };
        assert!(!e.must_stop(9_999));
        assert!(e.must_stop(10_000));
        // The follower saw the last renewal at the same instant at the earliest.
        let mut f = elector("follower");
        let lease = spec(Some("leader"), 1);
        f.decide(Some(&lease), 0);
        assert!(matches!(
            f.decide(Some(&lease), 14_999),
            Decision::Follow { .. }
        ));
        assert_eq!(f.decide(Some(&lease), 15_000), Decision::Acquire);
        // A follower that never led never has to stop.
        assert!(!f.must_stop(1_000_000));
    }
}
