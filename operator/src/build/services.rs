//! The ServiceAccount of the node pods and the two Services.

use k8s_openapi::api::core::v1::{Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildContext, BuildError, PORT_GOSSIP, PORT_GRPC, PORT_HTTP, PORT_INTERNODE};
use crate::crd::ServiceType;
use crate::names;

/// Identity of the node pods. Nodes never call the Kubernetes API, so no token is mounted.
pub fn service_account(ctx: &BuildContext) -> Result<ServiceAccount, BuildError> {
    Ok(ServiceAccount {
        metadata: ctx.meta(names::service_account(&ctx.name()))?,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

/// Headless Service: stable pod DNS names and the gossip seed. Not-ready pods
/// are published so joining nodes can find each other before they are ready.
pub fn peer_service(ctx: &BuildContext) -> Result<Service, BuildError> {
    let name = ctx.name();
    Ok(Service {
        metadata: ctx.meta(names::peer_service(&name))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names::selector_labels(&name)),
            ports: Some(vec![
                port("gossip", PORT_GOSSIP, "UDP", None),
                port("internode", PORT_INTERNODE, "TCP", None),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Service applications connect to: gRPC and HTTP of every ready node.
pub fn client_service(ctx: &BuildContext) -> Result<Service, BuildError> {
    let name = ctx.name();
    let cs = &ctx.cluster.spec.client_service;
    let node_ports = cs.type_ != ServiceType::ClusterIP;
    let mut meta = ctx.meta(names::client_service(&name))?;
    if !cs.annotations.is_empty() {
        meta.annotations = Some(cs.annotations.clone());
    }
    if !cs.labels.is_empty() {
        // The operator's labels win: they select and identify its objects.
        let mut labels = cs.labels.clone();
        labels.extend(meta.labels.take().unwrap_or_default());
        meta.labels = Some(labels);
    }
    Ok(Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(cs.type_.as_str().to_string()),
            selector: Some(names::selector_labels(&name)),
            ports: Some(vec![
                ServicePort {
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    ..port(
                        "grpc",
                        PORT_GRPC,
                        "TCP",
                        cs.grpc_node_port.filter(|_| node_ports),
                    )
                },
                port(
                    "http",
                    PORT_HTTP,
                    "TCP",
                    cs.http_node_port.filter(|_| node_ports),
                ),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

fn port(name: &str, port: i32, protocol: &str, node_port: Option<i32>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::String(name.into())),
        node_port,
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn service_account_has_no_token() {
        let c = cluster();
        let sa = service_account(&ctx(&c)).unwrap();
        assert_owned(&sa.metadata, "kv-node");
        assert_eq!(sa.automount_service_account_token, Some(false));
    }

    #[test]
    fn peer_service_is_headless_and_publishes_not_ready_pods() {
        let c = cluster();
        let svc = peer_service(&ctx(&c)).unwrap();
        assert_owned(&svc.metadata, "kv-peers");
        let s = svc.spec.unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.selector.unwrap(), names::selector_labels("kv"));
        let ports = s.ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0].port, ports[0].protocol.as_deref()),
            (7000, Some("UDP"))
        );
        assert_eq!(
            (ports[1].port, ports[1].protocol.as_deref()),
            (7001, Some("TCP"))
        );
    }

    #[test]
    fn client_service_exposes_grpc_and_http() {
        let mut c = cluster();
        let svc = client_service(&ctx(&c)).unwrap();
        assert_owned(&svc.metadata, "kv");
        let s = svc.spec.unwrap();
        assert_eq!(s.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            s.publish_not_ready_addresses, None,
            "only ready nodes serve clients"
        );
        let ports = s.ports.unwrap();
        assert_eq!(
            ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            vec![7070, 8080]
        );
        assert_eq!(ports[0].app_protocol.as_deref(), Some("kubernetes.io/h2c"));
        assert!(ports.iter().all(|p| p.node_port.is_none()));
        // Node ports are only set for NodePort/LoadBalancer services.
        c.spec.client_service.grpc_node_port = Some(30070);
        c.spec.client_service.http_node_port = Some(30080);
        let ports = client_service(&ctx(&c))
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap();
        assert!(ports.iter().all(|p| p.node_port.is_none()));
        c.spec.client_service.type_ = ServiceType::NodePort;
        c.spec
            .client_service
            .annotations
            .insert("a".into(), "b".into());
        c.spec
            .client_service
            .labels
            .insert("team".into(), "storage".into());
        c.spec
            .client_service
            .labels
            .insert(names::LABEL_INSTANCE.into(), "hijack".into());
        let svc = client_service(&ctx(&c)).unwrap();
        assert_eq!(svc.metadata.annotations.unwrap()["a"], "b");
        let labels = svc.metadata.labels.unwrap();
        assert_eq!(labels["team"], "storage");
        assert_eq!(labels[names::LABEL_INSTANCE], "kv", "operator labels win");
        let s = svc.spec.unwrap();
        assert_eq!(s.type_.as_deref(), Some("NodePort"));
        let ports = s.ports.unwrap();
        assert_eq!(ports[0].node_port, Some(30070));
        assert_eq!(ports[1].node_port, Some(30080));
    }
}
