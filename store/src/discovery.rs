//! Finds storage nodes by mDNS: every announced address becomes a probe target of the
//! [`Cluster`]; the probe admits the node only if it proves it holds the cluster secret.

use cairn_common::protocol::{MdnsScope, MDNS_SERVICE_TYPE};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};

use super::cluster::Cluster;

/// Browses for nodes until the process ends. Returns the daemon, which must be kept alive.
/// With scope `all`, `interfaces` (names such as `en0`), when given, are the only ones
/// browsed: a Mac with Wi-Fi, Ethernet and a VPN then asks only on the cluster's network.
pub fn start(
    scope: MdnsScope,
    interfaces: &[String],
    cluster: Cluster,
) -> Result<Option<ServiceDaemon>, mdns_sd::Error> {
    if scope == MdnsScope::Off {
        return Ok(None);
    }
    let daemon = ServiceDaemon::new()?;
    if scope == MdnsScope::Loopback {
        daemon.disable_interface(IfKind::All)?;
        daemon.enable_interface(IfKind::LoopbackV4)?;
    } else if !interfaces.is_empty() {
        daemon.disable_interface(IfKind::All)?;
        for name in interfaces {
            daemon.enable_interface(IfKind::Name(name.clone()))?;
        }
    }
    let events = daemon.browse(MDNS_SERVICE_TYPE)?;
    tokio::spawn(async move {
        while let Ok(event) = events.recv_async().await {
            if let ServiceEvent::ServiceResolved(svc) = event {
                for ip in svc.get_addresses_v4() {
                    let addr = format!("{ip}:{}", svc.get_port());
                    tracing::info!(%addr, name = %svc.fullname, "discovered a storage node over mDNS");
                    cluster.add_addr(addr);
                }
                cluster.probe_all().await;
            }
        }
    });
    tracing::info!(?scope, ?interfaces, "browsing for storage nodes over mDNS");
    Ok(Some(daemon))
}
