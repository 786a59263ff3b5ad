//! Next-hop MACs of the backends, from the kernel's route and neighbour tables.
//!
//! For each backend's underlay address, a route lookup (`RTM_GETROUTE`, what `ip route
//! get` does) gives the gateway, or none when the address is on-link, and the output
//! interface. The neighbour table then gives the MAC of that next hop. A missing,
//! incomplete or failed entry is created or refreshed with `NTF_USE`, as `ip neigh
//! replace ADDRESS dev IFACE use` does. The kernel then resolves it with ARP or
//! neighbour discovery, as if it were about to send a packet there; no packet of ours
//! is sent. A stale entry gets the same, so the kernel confirms it and a moved address
//! is noticed. Each round waits up to [`RESOLVE_WAIT`] for such entries.
//!
//! The control plane runs in the Spike node's network namespace. When DPDK owns the NIC,
//! the kernel sees that network only through the dataplane's `kernel_port` (a `net_tap`
//! interface that carries ARP and neighbour discovery), so that port must be up with the
//! node's underlay address and routes for these lookups to answer.
//!
//! The messages come from `netlink-packet-route` and go over a plain `netlink-sys`
//! socket. `rtnetlink`, built on the same two crates, offers an async API for dumps and
//! changes, but neither a single-destination route lookup nor `NTF_USE`; three request
//! and reply exchanges are simpler to write directly, and need no `unsafe` here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use spike_core::config::ServiceConfig;
use spike_core::wire::MacAddr;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// Maximum wait in one round for the kernel to resolve the requested entries.
pub const RESOLVE_WAIT: Duration = Duration::from_millis(1000);
/// Interval between checks of entries that are being resolved.
const RECHECK: Duration = Duration::from_millis(50);
/// Interval between rounds: how soon a changed or lost neighbour is noticed.
const REFRESH: Duration = Duration::from_secs(1);
/// Largest netlink reply read; route and neighbour replies are a few hundred bytes.
const RECV_BYTES: usize = 16 * 1024;

/// A failure of the netlink socket itself, as opposed to a lookup that finds nothing.
#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error(
        "cannot open a netlink route socket: {0}; run spike-controlplane on Linux, or \
         set controlplane.resolve_next_hops = false"
    )]
    Open(std::io::Error),
    #[error("netlink request failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decode a netlink reply: {0}")]
    Decode(String),
}

/// Where the kernel sends packets for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The gateway, or the address itself when it is on-link.
    pub next_hop: IpAddr,
    /// Index of the output interface.
    pub interface: u32,
}

/// The outcome of resolving one backend address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// The MAC to put in the outer Ethernet header, and the address it belongs to.
    Resolved { mac: MacAddr, via: IpAddr },
    /// No MAC: the reason, for the log.
    Unresolved(String),
}

/// A route netlink socket for one request at a time.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::Open`] when the kernel refuses the socket.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends one request and returns the kernel's reply: a message, or the error code
    /// (0 for an acknowledgement).
    fn exchange(
        &mut self,
        flags: u16,
        message: RouteNetlinkMessage,
    ) -> Result<Result<RouteNetlinkMessage, i32>, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut buffer = vec![0; RECV_BYTES];
        loop {
            let length = self.socket.recv(&mut &mut buffer[..], 0)?;
            let mut offset = 0;
            while offset < length {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&buffer[offset..length])
                        .map_err(|error| NetlinkError::Decode(error.to_string()))?;
                let reply_length = reply.header.length as usize;
                // Replies to earlier requests that timed out on our side are skipped.
                if reply.header.sequence_number == self.sequence {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(message) => return Ok(Ok(message)),
                        NetlinkPayload::Error(error) => {
                            return Ok(Err(error.code.map_or(0, |code| code.get())))
                        }
                        _ => {}
                    }
                }
                if reply_length == 0 {
                    break;
                }
                offset += reply_length;
            }
        }
    }

    /// Looks up the route to `destination` as the kernel would forward to it.
    ///
    /// # Errors
    ///
    /// `Ok(Err(reason))` when the kernel has no usable route; `Err` when netlink fails.
    pub fn route(&mut self, destination: IpAddr) -> Result<Result<Route, String>, NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(destination);
        message.header.destination_prefix_length = if destination.is_ipv4() { 32 } else { 128 };
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(destination)));
        let reply = match self.exchange(NLM_F_REQUEST, RouteNetlinkMessage::GetRoute(message))? {
            Ok(RouteNetlinkMessage::NewRoute(reply)) => reply,
            Ok(other) => return Err(NetlinkError::Decode(format!("unexpected reply {other:?}"))),
            Err(code) => {
                let error = std::io::Error::from_raw_os_error(-code);
                return Ok(Err(format!("no route to {destination}: {error}")));
            }
        };
        if reply.header.kind != RouteType::Unicast {
            return Ok(Err(format!(
                "the route to {destination} is of type {:?}, not a unicast route through an \
                 interface",
                reply.header.kind
            )));
        }
        let mut next_hop = destination;
        let mut interface = None;
        for attribute in &reply.attributes {
            match attribute {
                RouteAttribute::Gateway(RouteAddress::Inet(gateway)) => {
                    next_hop = IpAddr::V4(*gateway);
                }
                RouteAttribute::Gateway(RouteAddress::Inet6(gateway)) => {
                    next_hop = IpAddr::V6(*gateway);
                }
                RouteAttribute::Oif(index) => interface = Some(*index),
                _ => {}
            }
        }
        Ok(match interface {
            Some(interface) => Ok(Route {
                next_hop,
                interface,
            }),
            None => Err(format!(
                "the route to {destination} names no output interface"
            )),
        })
    }

    /// Returns the neighbour entry of `address` on `interface`: its state and MAC, or
    /// `None` when there is no entry.
    ///
    /// # Errors
    ///
    /// `Err` when netlink fails.
    pub fn neighbour(
        &mut self,
        interface: u32,
        address: IpAddr,
    ) -> Result<Option<(NeighbourState, Option<MacAddr>)>, NetlinkError> {
        let message = neighbour_message(interface, address);
        let reply = match self
            .exchange(NLM_F_REQUEST, RouteNetlinkMessage::GetNeighbour(message))?
        {
            Ok(RouteNetlinkMessage::NewNeighbour(reply)) => reply,
            Ok(other) => return Err(NetlinkError::Decode(format!("unexpected reply {other:?}"))),
            // ENOENT: no entry. Any other refusal is treated the same way, so the entry
            // is requested and the next round looks again.
            Err(_) => return Ok(None),
        };
        let mac = reply
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                NeighbourAttribute::LinkLayerAddress(bytes) => {
                    <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
                }
                _ => None,
            });
        Ok(Some((reply.header.state, mac)))
    }

    /// Asks the kernel to resolve or confirm the neighbour entry of `address` on
    /// `interface`, creating it when missing. Only ARP or neighbour discovery goes out.
    ///
    /// # Errors
    ///
    /// `Ok(Err(reason))` when the kernel refuses; `Err` when netlink fails.
    pub fn solicit(
        &mut self,
        interface: u32,
        address: IpAddr,
    ) -> Result<Result<(), String>, NetlinkError> {
        let mut message = neighbour_message(interface, address);
        message.header.flags = NeighbourFlags::Use;
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        Ok(
            match self.exchange(flags, RouteNetlinkMessage::NewNeighbour(message))? {
                Err(0) | Ok(_) => Ok(()),
                Err(code) => Err(format!(
                    "the kernel refused to resolve {address} on interface {interface}: {}",
                    std::io::Error::from_raw_os_error(-code)
                )),
            },
        )
    }
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neighbour_message(interface: u32, address: IpAddr) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = family(address);
    message.header.ifindex = interface;
    let destination = match address {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    };
    message
        .attributes
        .push(NeighbourAttribute::Destination(destination));
    message
}

/// Whether an entry in `state` contains a MAC the kernel would send to.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// Resolves every address in `addresses`: one route lookup each, then the neighbour
/// entry of its next hop. Entries that are missing, incomplete or failed are requested,
/// and rechecked until they resolve or [`RESOLVE_WAIT`] passes; stale ones are
/// requested too so that the kernel confirms them for the next round.
///
/// # Errors
///
/// [`NetlinkError`] when the socket fails; a negative answer is a [`NextHop::Unresolved`].
pub fn resolve_all(
    netlink: &mut Netlink,
    addresses: &BTreeSet<IpAddr>,
) -> Result<BTreeMap<IpAddr, NextHop>, NetlinkError> {
    let mut resolved = BTreeMap::new();
    let mut pending: BTreeMap<IpAddr, Route> = BTreeMap::new();
    for &address in addresses {
        let route = match netlink.route(address)? {
            Ok(route) => route,
            Err(reason) => {
                resolved.insert(address, NextHop::Unresolved(reason));
                continue;
            }
        };
        let entry = netlink.neighbour(route.interface, route.next_hop)?;
        if let Some((state, Some(mac))) = entry.filter(|(state, _)| usable(*state)) {
            if state == NeighbourState::Stale {
                // Ask for confirmation; the MAC stays in use meanwhile, as in the kernel.
                let _ = netlink.solicit(route.interface, route.next_hop)?;
            }
            resolved.insert(
                address,
                NextHop::Resolved {
                    mac,
                    via: route.next_hop,
                },
            );
            continue;
        }
        if let Err(reason) = netlink.solicit(route.interface, route.next_hop)? {
            resolved.insert(address, NextHop::Unresolved(reason));
            continue;
        }
        pending.insert(address, route);
    }

    let deadline = Instant::now() + RESOLVE_WAIT;
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(RECHECK);
        let mut still_pending = BTreeMap::new();
        for (address, route) in pending {
            match netlink.neighbour(route.interface, route.next_hop)? {
                Some((state, Some(mac))) if usable(state) => {
                    let via = route.next_hop;
                    resolved.insert(address, NextHop::Resolved { mac, via });
                }
                _ => {
                    still_pending.insert(address, route);
                }
            }
        }
        pending = still_pending;
    }
    for (address, route) in pending {
        let state = netlink
            .neighbour(route.interface, route.next_hop)?
            .map_or_else(|| "missing".to_owned(), |(state, _)| format!("{state:?}"));
        let via = if route.next_hop == address {
            String::new()
        } else {
            format!(" (gateway of {address})")
        };
        resolved.insert(
            address,
            NextHop::Unresolved(format!(
                "neighbour {}{via} on interface {} is not resolved: {state}",
                route.next_hop, route.interface
            )),
        );
    }
    Ok(resolved)
}

/// The results of one round: the next hop of each address that was asked for.
type Round = Arc<BTreeMap<IpAddr, NextHop>>;

/// The resolver task: it resolves the addresses it is given every [`REFRESH`], and
/// at once when they change, off the async runtime's threads.
pub struct Resolver {
    requested: watch::Sender<BTreeSet<IpAddr>>,
    results: watch::Receiver<Option<Round>>,
    task: JoinHandle<()>,
}

impl Resolver {
    /// Opens the netlink socket and starts the task.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::Open`] when the socket cannot be opened.
    pub fn start() -> Result<Resolver, NetlinkError> {
        let netlink = Netlink::open()?;
        let (requested, requested_rx) = watch::channel(BTreeSet::new());
        let (results_tx, results) = watch::channel(None);
        let task = tokio::spawn(resolve_rounds(netlink, requested_rx, results_tx));
        Ok(Resolver {
            requested,
            results,
            task,
        })
    }

    /// Takes the backends of `services` that need a next-hop MAC, asks for them, and
    /// returns the services with the MACs filled in and backends without one left out.
    /// Returns `None` while an address has not been looked up yet.
    pub fn apply(
        &self,
        services: &[ServiceConfig],
        metrics: &Metrics,
    ) -> Option<Vec<ServiceConfig>> {
        let requested: BTreeSet<IpAddr> = services
            .iter()
            .flat_map(|service| &service.backends)
            .filter(|backend| backend.next_hop_mac.is_none())
            .map(|backend| backend.address)
            .collect();
        let round = self.results.borrow().clone();
        self.requested.send_if_modified(|current| {
            let changed = *current != requested;
            if changed {
                current.clone_from(&requested);
            }
            changed
        });
        let round = round?;
        if !requested.iter().all(|address| round.contains_key(address)) {
            return None;
        }

        metrics.next_hop_resolved.clear();
        let mut resolved = services.to_vec();
        for service in &mut resolved {
            service.backends.retain_mut(|backend| {
                let mac = match backend.next_hop_mac {
                    Some(mac) => Some(mac),
                    None => match &round[&backend.address] {
                        NextHop::Resolved { mac, .. } => Some(*mac),
                        NextHop::Unresolved(_) => None,
                    },
                };
                let labels = [
                    ("service", service.name.clone()),
                    ("backend", backend.name.clone()),
                ];
                metrics
                    .next_hop_resolved
                    .get_or_create(&labels)
                    .set(i64::from(mac.is_some()));
                backend.next_hop_mac = mac;
                mac.is_some()
            });
        }
        let unresolved = requested
            .iter()
            .filter(|address| matches!(round[*address], NextHop::Unresolved(_)))
            .count();
        metrics.unresolved_next_hops.set(unresolved as i64);
        Some(resolved)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the resolver has new results; never returns without a resolver.
pub async fn changed(resolver: Option<&mut Resolver>) {
    match resolver {
        Some(resolver) => {
            if resolver.results.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The resolver task's loop. A round's results are sent only when they differ from
/// the last, and each address's change is logged once.
async fn resolve_rounds(
    mut netlink: Netlink,
    mut requested: watch::Receiver<BTreeSet<IpAddr>>,
    results: watch::Sender<Option<Round>>,
) {
    let mut last: BTreeMap<IpAddr, NextHop> = BTreeMap::new();
    loop {
        let addresses = requested.borrow_and_update().clone();
        if !addresses.is_empty() {
            let round = tokio::task::spawn_blocking(move || {
                let round = resolve_all(&mut netlink, &addresses);
                (netlink, round)
            })
            .await;
            let round = match round {
                Ok((returned, round)) => {
                    netlink = returned;
                    round
                }
                Err(panicked) => {
                    error!(error = %panicked, "the next-hop resolver failed; it stops");
                    return;
                }
            };
            match round {
                Ok(round) => {
                    log_changes(&last, &round);
                    if round != last || results.borrow().is_none() {
                        last.clone_from(&round);
                        results.send_replace(Some(Arc::new(round)));
                    }
                }
                Err(error) => {
                    error!(%error, "next-hop lookup failed; the last next hops stay");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            changed = requested.changed() => if changed.is_err() { return },
        }
    }
}

fn log_changes(last: &BTreeMap<IpAddr, NextHop>, round: &BTreeMap<IpAddr, NextHop>) {
    for (address, next_hop) in round {
        if last.get(address) == Some(next_hop) {
            continue;
        }
        match next_hop {
            NextHop::Resolved { mac, via } => {
                info!(backend = %address, via = %via, mac = %mac, "next hop resolved");
            }
            NextHop::Unresolved(reason) => warn!(
                backend = %address,
                reason = %reason,
                "backend left out of the tables: its next hop has no MAC"
            ),
        }
    }
}
