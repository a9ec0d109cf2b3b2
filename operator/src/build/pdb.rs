//! The PodDisruptionBudget of the node pods.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildContext, BuildError};
use crate::names;

/// Node pods that voluntary disruptions (drains, cluster upgrades) may take
/// down at once: `spec.disruptionBudget.maxUnavailable`, else N−W so every key
/// keeps W live replicas — but at least 1. With N=W a budget of 0 would block
/// every node drain forever; with 1, a drained node's writes go to substitutes
/// as hints (sloppy quorum) until it is back. The trade-off is in the README.
pub fn max_unavailable(spec: &crate::crd::KVClusterSpec) -> i32 {
    let r = spec.replication;
    spec.disruption_budget
        .max_unavailable
        .unwrap_or((r.n - r.w).max(1))
}

pub fn pdb(ctx: &BuildContext) -> Result<PodDisruptionBudget, BuildError> {
    let name = ctx.name();
    Ok(PodDisruptionBudget {
        metadata: ctx.meta(names::pdb(&name))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(&ctx.cluster.spec))),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(&name)),
                ..LabelSelector::default()
            }),
            // A pod that is not ready serves nothing: evicting it costs no
            // availability, and a stuck pod must not block a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn max(c: &crate::crd::KVCluster) -> Option<IntOrString> {
        pdb(&ctx(c)).unwrap().spec.unwrap().max_unavailable
    }

    #[test]
    fn pdb_allows_n_minus_w_unavailable_and_evicts_unhealthy_pods() {
        let mut c = cluster();
        let p = pdb(&ctx(&c)).unwrap();
        assert_owned(&p.metadata, "kv");
        let s = p.spec.unwrap();
        assert_eq!(s.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(s.min_available, None);
        assert_eq!(
            s.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        assert_eq!(
            s.selector.unwrap().match_labels.unwrap(),
            names::selector_labels("kv")
        );
        c.spec.replication.n = 5;
        c.spec.replication.w = 2;
        assert_eq!(max(&c), Some(IntOrString::Int(3)));
    }

    #[test]
    fn n_equal_w_does_not_block_every_drain() {
        let mut c = cluster();
        c.spec.replication.w = 3;
        assert_eq!(max(&c), Some(IntOrString::Int(1)));
        // An explicit budget wins, 0 included (the user chose to block drains).
        c.spec.disruption_budget.max_unavailable = Some(0);
        assert_eq!(max(&c), Some(IntOrString::Int(0)));
        c.spec.disruption_budget.max_unavailable = Some(2);
        assert_eq!(max(&c), Some(IntOrString::Int(2)));
    }
}
