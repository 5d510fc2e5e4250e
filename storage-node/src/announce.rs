//! mDNS announcement, so a gateway finds this node with no address typed anywhere.
//!
//! The TXT record carries the node id, the protocol version and the capacity. Knowing the
//! announcement is not enough to get shards: the gateway admits a node only after it
//! proves it holds the cluster secret (`GET /v1/info?challenge=...`).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use cairn_common::ids::NodeId;
use cairn_common::protocol::{
    MdnsScope, MDNS_SERVICE_TYPE, PROTOCOL_VERSION, TXT_CAPACITY, TXT_NODE_ID, TXT_PROTOCOL,
};
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};

/// Starts announcing; the announcement lasts as long as the returned daemon.
pub fn announce(
    scope: MdnsScope,
    node: NodeId,
    addr: SocketAddr,
    advertise: Option<IpAddr>,
    capacity: u64,
) -> anyhow::Result<Option<ServiceDaemon>> {
    if scope == MdnsScope::Off {
        return Ok(None);
    }
    let ip = match (advertise, addr.ip()) {
        (Some(ip), _) => ip,
        (None, ip) if !ip.is_unspecified() => ip,
        (None, _) if scope == MdnsScope::Loopback => IpAddr::from([127, 0, 0, 1]),
        _ => anyhow::bail!("--mdns all with an unspecified --listen address needs --advertise IP"),
    };
    let daemon = ServiceDaemon::new().context("starting mDNS")?;
    if scope == MdnsScope::Loopback {
        daemon
            .disable_interface(IfKind::All)
            .context("mDNS interfaces")?;
        daemon
            .enable_interface(IfKind::LoopbackV4)
            .context("mDNS loopback")?;
    }
    let id = node.to_string();
    let proto = PROTOCOL_VERSION.to_string();
    let cap = capacity.to_string();
    let props = [
        (TXT_NODE_ID, id.as_str()),
        (TXT_PROTOCOL, proto.as_str()),
        (TXT_CAPACITY, cap.as_str()),
    ];
    let instance = format!("cairn-{}", &id[..12]);
    let host = format!("{instance}.local.");
    let info = ServiceInfo::new(
        MDNS_SERVICE_TYPE,
        &instance,
        &host,
        ip,
        addr.port(),
        &props[..],
    )
    .context("building the mDNS record")?;
    let events = daemon.monitor().context("watching mDNS interfaces")?;
    daemon
        .register(info.clone())
        .context("registering the mDNS service")?;
    tracing::info!(%ip, port = addr.port(), ?scope, "announcing over mDNS");
    let watcher = daemon.clone();
    std::thread::Builder::new()
        .name("mdns-watch".into())
        .spawn(move || reannounce_when_address_appears(watcher, events, info, ip))
        .context("starting the mDNS watcher")?;
    Ok(Some(daemon))
}

/// A node often starts before its address exists (a Pi's network comes up after the
/// service; a link flaps). mdns-sd announces a fixed-address service only on interfaces
/// that hold the address when it is registered, so register it again when it appears.
fn reannounce_when_address_appears(
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<DaemonEvent>,
    info: ServiceInfo,
    ip: IpAddr,
) {
    while let Ok(event) = events.recv() {
        let DaemonEvent::IpAdd(added) = event else {
            continue;
        };
        if added != ip {
            continue;
        }
        // Registering the same name again replaces the record and announces it on the
        // interfaces that now hold the address (no goodbye packets, unlike unregistering).
        tracing::info!(%ip, "advertised address came up: announcing again");
        if let Err(e) = daemon.register(info.clone()) {
            tracing::warn!(%ip, error = %e, "mDNS re-announcement failed");
        }
    }
}
