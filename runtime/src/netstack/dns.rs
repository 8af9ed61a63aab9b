//! The embedded DNS server of one network, on hickory-server.
//!
//! It serves the names in a [`Records`] table over UDP and TCP on one
//! address (the network's gateway, port 53, in production). A custom
//! `RequestHandler` reads the table on every query, so a change the caller
//! makes under the lock is visible to the very next query; answers are
//! authoritative with TTL 0, so no resolver keeps a stale address. For a name
//! the table knows: A (and ANY) queries get its addresses, other types an
//! empty NOERROR. PTR queries under `in-addr.arpa.` for a known address get
//! `<name>.rsup.`. Everything else is relayed as-is over UDP (over TCP when
//! the answer is truncated and the client came over TCP) to the upstream
//! servers the caller gave, first answer wins, each tried with a timeout;
//! with no upstream the answer is NXDOMAIN. The server never reads
//! `/etc/resolv.conf` or contacts anything on its own.

mod records;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, instrument, warn};

pub use records::{DOMAIN, Records};

use super::NetError;

/// How long one upstream server gets to answer a relayed query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// A running DNS server; stop it with [`DnsServer::stop`] (dropping it
/// aborts its tasks).
pub struct DnsServer {
    server: Server<Handler>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// The other networks' name tables a client also sees, by its address on
/// this network: a container on several networks resolves the names of
/// every one of them through the DNS server of its first (as Docker's
/// resolver does). Each entry names its owner (a container id), so that
/// its release drops it.
pub type Views = Arc<RwLock<std::collections::HashMap<Ipv4Addr, View>>>;

/// What one client sees beyond its own network's table.
#[derive(Debug, Clone)]
pub struct View {
    pub owner: String,
    pub tables: Vec<Arc<RwLock<Records>>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (with port 0, UDP picks a port and TCP
    /// takes the same one) and starts serving `records`. Unknown names go to
    /// `upstream` (in order; the server's own address is dropped from the
    /// list to avoid a loop), or get NXDOMAIN if it is empty.
    #[instrument(skip_all, fields(listen = %listen))]
    pub async fn start(
        listen: SocketAddr,
        records: Arc<RwLock<Records>>,
        upstream: Vec<SocketAddr>,
    ) -> Result<DnsServer, NetError> {
        Self::start_for(listen, records, upstream, None, Views::default()).await
    }

    /// Like [`DnsServer::start`], answering only clients inside `clients`
    /// (a network's subnet; loopback too): a network's names are for its own
    /// containers. Others get REFUSED.
    pub async fn start_for(
        listen: SocketAddr,
        records: Arc<RwLock<Records>>,
        upstream: Vec<SocketAddr>,
        clients: Option<super::Subnet>,
        views: Views,
    ) -> Result<DnsServer, NetError> {
        let bind_err = |addr, proto| {
            move |source| NetError::DnsBind {
                addr,
                proto,
                source,
            }
        };
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(bind_err(listen, "udp"))?;
        let local_addr = udp.local_addr().map_err(bind_err(listen, "udp"))?;
        let tcp = TcpListener::bind(local_addr)
            .await
            .map_err(bind_err(local_addr, "tcp"))?;
        let upstream: Vec<SocketAddr> = upstream.into_iter().filter(|u| *u != local_addr).collect();
        let mut server = Server::new(Handler {
            records,
            upstream: upstream.into(),
            clients,
            views,
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 32);
        debug!(%local_addr, "dns server started");
        Ok(DnsServer { server, local_addr })
    }

    /// The address the server answers on (with the port it bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting queries and waits for the server's tasks to end.
    pub async fn stop(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            warn!(local_addr = %self.local_addr, error = %e, "dns server stopped with an error");
        }
    }
}

/// What the table says about one query.
#[derive(Debug, PartialEq)]
enum Local {
    /// The name is ours: these records (possibly none: NODATA).
    Answer(Vec<Record>),
    /// Not ours: relay or NXDOMAIN.
    Unknown,
}

/// The IPv4 address a `d.c.b.a.in-addr.arpa.` name stands for.
fn parse_reverse(name: &str) -> Option<Ipv4Addr> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let octets = name.strip_suffix(".in-addr.arpa")?;
    let mut parts: Vec<u8> = octets
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.len() != 4 {
        return None;
    }
    parts.reverse();
    Some(Ipv4Addr::new(parts[0], parts[1], parts[2], parts[3]))
}

/// Answers `query` from the table, if the name is in it.
fn answer_locally(records: &Records, query: &LowerQuery) -> Local {
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Local::Unknown;
    }
    let qname = Name::from(query.name().clone());
    let text = qname.to_ascii();
    if let Some(ip) = parse_reverse(&text) {
        return match records.reverse(ip) {
            Some(label) if matches!(query.query_type(), RecordType::PTR | RecordType::ANY) => {
                match Name::from_ascii(format!("{label}.{DOMAIN}.")) {
                    Ok(target) => {
                        Local::Answer(vec![Record::from_rdata(qname, 0, RData::PTR(PTR(target)))])
                    }
                    Err(_) => Local::Unknown,
                }
            }
            Some(_) => Local::Answer(Vec::new()),
            None => Local::Unknown,
        };
    }
    let ips = records.lookup(&text);
    if ips.is_empty() {
        return Local::Unknown;
    }
    match query.query_type() {
        RecordType::A | RecordType::ANY => Local::Answer(
            ips.into_iter()
                .map(|ip| Record::from_rdata(qname.clone(), 0, RData::A(A(ip))))
                .collect(),
        ),
        _ => Local::Answer(Vec::new()),
    }
}

/// The request handler: the table first, then the upstream servers.
struct Handler {
    records: Arc<RwLock<Records>>,
    upstream: Arc<[SocketAddr]>,
    clients: Option<super::Subnet>,
    views: Views,
}

impl Handler {
    /// The answer from the tables of the client's other networks, if any.
    fn answer_in_views(&self, src: IpAddr, query: &LowerQuery) -> Local {
        let IpAddr::V4(ip) = src else {
            return Local::Unknown;
        };
        let tables = {
            let views = self.views.read().unwrap_or_else(|e| e.into_inner());
            match views.get(&ip) {
                Some(v) => v.tables.clone(),
                None => return Local::Unknown,
            }
        };
        for t in tables {
            let records = t.read().unwrap_or_else(|e| e.into_inner());
            if let Local::Answer(a) = answer_locally(&records, query) {
                return Local::Answer(a);
            }
        }
        Local::Unknown
    }
}

fn info(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        // Like hickory's Catalog: EDNS in the answer if the query had it.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let builder = || MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut md = Metadata::response_from_request(&request.metadata);
        md.recursion_available = !self.upstream.is_empty();

        if let Some(net) = &self.clients {
            let ok = match request.src().ip() {
                std::net::IpAddr::V4(ip) => ip.is_loopback() || net.contains(ip),
                std::net::IpAddr::V6(ip) => ip.is_loopback(),
            };
            if !ok {
                md.response_code = ResponseCode::Refused;
                return send(&mut response, builder().build_no_records(md), md).await;
            }
        }
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            md.response_code = ResponseCode::NotImp;
            return send(&mut response, builder().build_no_records(md), md).await;
        }
        let query = match request.request_info() {
            Ok(i) => i.query,
            Err(_) => {
                md.response_code = ResponseCode::FormErr;
                return send(&mut response, builder().build_no_records(md), md).await;
            }
        };
        let local = {
            // A poisoned lock only means a writer panicked; the table itself
            // is still consistent enough to answer from.
            let records = self.records.read().unwrap_or_else(|e| e.into_inner());
            answer_locally(&records, query)
        };
        let local = match local {
            Local::Unknown => self.answer_in_views(request.src().ip(), query),
            answer => answer,
        };
        match local {
            Local::Answer(answers) => {
                md.authoritative = true;
                let resp = builder().build(md, answers.iter(), [], [], []);
                send(&mut response, resp, md).await
            }
            Local::Unknown if self.upstream.is_empty() => {
                md.response_code = ResponseCode::NXDomain;
                send(&mut response, builder().build_no_records(md), md).await
            }
            Local::Unknown => {
                let tcp = request.protocol() == Protocol::Tcp;
                match relay(&self.upstream, request.as_slice(), request.metadata.id, tcp).await {
                    Some(up) => {
                        let mut umd = up.metadata;
                        umd.id = request.metadata.id;
                        // We answer as a forwarder, not as the zone's owner.
                        umd.authoritative = false;
                        umd.recursion_available = true;
                        let resp = builder().build(
                            umd,
                            up.answers.iter(),
                            up.authorities.iter(),
                            [],
                            up.additionals.iter(),
                        );
                        send(&mut response, resp, umd).await
                    }
                    None => {
                        md.response_code = ResponseCode::ServFail;
                        send(&mut response, builder().build_no_records(md), md).await
                    }
                }
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    md: Metadata,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "sending a dns response failed");
            let mut md = md;
            md.response_code = ResponseCode::ServFail;
            info(md)
        }
    }
}

/// Sends the raw query to each upstream server in turn; the first valid
/// answer (same id, a response) wins.
async fn relay(upstream: &[SocketAddr], raw: &[u8], id: u16, tcp_client: bool) -> Option<Message> {
    for up in upstream {
        match tokio::time::timeout(UPSTREAM_TIMEOUT, relay_udp(*up, raw, id)).await {
            Ok(Ok(msg)) if msg.metadata.truncation && tcp_client => {
                match tokio::time::timeout(UPSTREAM_TIMEOUT, relay_tcp(*up, raw, id)).await {
                    Ok(Ok(full)) => return Some(full),
                    _ => return Some(msg),
                }
            }
            Ok(Ok(msg)) => return Some(msg),
            Ok(Err(e)) => debug!(upstream = %up, error = %e, "upstream failed"),
            Err(_) => debug!(upstream = %up, "upstream timed out"),
        }
    }
    None
}

fn answer_to(id: u16, bytes: &[u8]) -> Option<Message> {
    let msg = Message::from_vec(bytes).ok()?;
    (msg.metadata.id == id && msg.metadata.message_type == MessageType::Response).then_some(msg)
}

async fn relay_udp(up: SocketAddr, raw: &[u8], id: u16) -> std::io::Result<Message> {
    let any: IpAddr = match up {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).await?;
    sock.connect(up).await?;
    sock.send(raw).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if let Some(msg) = answer_to(id, &buf[..n]) {
            return Ok(msg);
        }
    }
}

async fn relay_tcp(up: SocketAddr, raw: &[u8], id: u16) -> std::io::Result<Message> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let len = u16::try_from(raw.len()).map_err(|_| bad("query too long"))?;
    let mut s = TcpStream::connect(up).await?;
    let mut framed = Vec::with_capacity(raw.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(raw);
    s.write_all(&framed).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await?;
    answer_to(id, &buf).ok_or_else(|| bad("not an answer to our query"))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;

    use super::*;

    fn query_msg(name: &str, qtype: RecordType) -> (u16, Vec<u8>) {
        let id: u16 = rand_id();
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
        (id, m.to_vec().expect("encode"))
    }

    fn rand_id() -> u16 {
        use std::sync::atomic::{AtomicU16, Ordering};
        static N: AtomicU16 = AtomicU16::new(0x1234);
        N.fetch_add(7, Ordering::Relaxed)
    }

    async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let (id, bytes) = query_msg(name, qtype);
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        sock.connect(server).await.expect("connect");
        sock.send(&bytes).await.expect("send");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
            .await
            .expect("answer in time")
            .expect("recv");
        let m = Message::from_vec(&buf[..n]).expect("decode");
        assert_eq!(m.metadata.id, id);
        m
    }

    async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let (id, bytes) = query_msg(name, qtype);
        let m = tokio::time::timeout(Duration::from_secs(10), relay_tcp(server, &bytes, id))
            .await
            .expect("answer in time")
            .expect("tcp query");
        assert_eq!(m.metadata.id, id);
        m
    }

    fn a_records(m: &Message) -> Vec<(Ipv4Addr, u32)> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((a.0, r.ttl)),
                _ => None,
            })
            .collect()
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().expect("addr")
    }

    #[tokio::test]
    async fn a_client_on_several_networks_sees_their_names() {
        let own = Arc::new(RwLock::new(Records::default()));
        let other = Arc::new(RwLock::new(Records::default()));
        let ip = Ipv4Addr::new(10, 89, 1, 2);
        other
            .write()
            .expect("lock")
            .set("c2", &["srv".to_owned()], ip);
        let views = Views::default();
        let server = DnsServer::start_for(local(), own, vec![], None, views.clone())
            .await
            .expect("start");
        let addr = server.local_addr();
        // Not on the other network: not found.
        let m = ask_udp(addr, "srv.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // The client (127.0.0.1 here) is on it too: found.
        views.write().expect("lock").insert(
            Ipv4Addr::LOCALHOST,
            View {
                owner: "c1".into(),
                tables: vec![other.clone()],
            },
        );
        let m = ask_udp(addr, "srv.", RecordType::A).await;
        assert_eq!(a_records(&m), vec![(ip, 0)]);
        // Another client address sees only its own network.
        views.write().expect("lock").clear();
        let m = ask_udp(addr, "srv.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn serves_records_over_udp_and_tcp() {
        let records = Arc::new(RwLock::new(Records::default()));
        let ip1 = Ipv4Addr::new(10, 88, 0, 2);
        records
            .write()
            .expect("lock")
            .set("c1", &["web".to_owned(), "www".to_owned()], ip1);
        let server = DnsServer::start(local(), records.clone(), vec![])
            .await
            .expect("start");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        for m in [
            ask_udp(addr, "web.", RecordType::A).await,
            ask_tcp(addr, "web.", RecordType::A).await,
            ask_udp(addr, "WWW.rsup.", RecordType::A).await,
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.metadata.authoritative);
            assert_eq!(a_records(&m), vec![(ip1, 0)]);
        }

        // Known name, other type: NOERROR, no answer.
        let m = ask_udp(addr, "web.", RecordType::AAAA).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());

        // A new address is served at once.
        let ip2 = Ipv4Addr::new(10, 88, 0, 9);
        records
            .write()
            .expect("lock")
            .set("c1", &["web".to_owned()], ip2);
        assert_eq!(
            a_records(&ask_udp(addr, "web.", RecordType::A).await),
            vec![(ip2, 0)]
        );
        assert_eq!(
            a_records(&ask_tcp(addr, "web.", RecordType::A).await),
            vec![(ip2, 0)]
        );
        assert_eq!(
            ask_udp(addr, "www.", RecordType::A)
                .await
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );

        // PTR.
        let m = ask_udp(addr, "9.0.88.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let ptrs: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(ptrs, vec!["web.rsup.".to_owned()]);
        assert_eq!(
            ask_tcp(addr, "2.0.88.10.in-addr.arpa.", RecordType::PTR)
                .await
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );

        // Removed: NXDOMAIN; never known: NXDOMAIN.
        records.write().expect("lock").remove("c1");
        for m in [
            ask_udp(addr, "web.", RecordType::A).await,
            ask_tcp(addr, "web.", RecordType::A).await,
            ask_udp(addr, "nothing-here.example.", RecordType::A).await,
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            assert!(m.answers.is_empty());
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn relays_unknown_names_to_upstream() {
        // The stub upstream knows "far"; the server under test does not.
        let far = Ipv4Addr::new(192, 0, 2, 50);
        let stub_records = Arc::new(RwLock::new(Records::default()));
        stub_records
            .write()
            .expect("lock")
            .set("x", &["far".to_owned()], far);
        let stub = DnsServer::start(local(), stub_records, vec![])
            .await
            .expect("stub");

        // A closed port first (refused at once), then the stub.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("addr")
        };
        let records = Arc::new(RwLock::new(Records::default()));
        records
            .write()
            .expect("lock")
            .set("c1", &["near".to_owned()], Ipv4Addr::new(10, 88, 0, 2));
        let server = DnsServer::start(local(), records, vec![closed, stub.local_addr()])
            .await
            .expect("start");
        let addr = server.local_addr();

        for m in [
            ask_udp(addr, "far.", RecordType::A).await,
            ask_tcp(addr, "far.rsup.", RecordType::A).await,
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(a_records(&m), vec![(far, 0)]);
            assert!(m.metadata.recursion_available);
            assert!(!m.metadata.authoritative);
        }
        // The stub's NXDOMAIN comes back as is.
        assert_eq!(
            ask_udp(addr, "nowhere.", RecordType::A)
                .await
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
        // Local names are still answered locally.
        assert_eq!(
            a_records(&ask_udp(addr, "near.", RecordType::A).await),
            vec![(Ipv4Addr::new(10, 88, 0, 2), 0)]
        );

        // With the upstream gone, unknown names get SERVFAIL.
        stub.stop().await;
        let lonely = DnsServer::start(
            local(),
            Arc::new(RwLock::new(Records::default())),
            vec![closed],
        )
        .await
        .expect("start");
        assert_eq!(
            ask_udp(lonely.local_addr(), "far.", RecordType::A)
                .await
                .metadata
                .response_code,
            ResponseCode::ServFail
        );
        lonely.stop().await;
        server.stop().await;
    }

    #[tokio::test]
    async fn silent_upstream_times_out_and_next_one_answers() {
        let far = Ipv4Addr::new(192, 0, 2, 51);
        let stub_records = Arc::new(RwLock::new(Records::default()));
        stub_records
            .write()
            .expect("lock")
            .set("x", &["far".to_owned()], far);
        let stub = DnsServer::start(local(), stub_records, vec![])
            .await
            .expect("stub");
        // Bound and never read: queries to it go unanswered.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server = DnsServer::start(
            local(),
            Arc::new(RwLock::new(Records::default())),
            vec![silent.local_addr().expect("addr"), stub.local_addr()],
        )
        .await
        .expect("start");
        let started = std::time::Instant::now();
        let m = ask_udp(server.local_addr(), "far.", RecordType::A).await;
        assert_eq!(a_records(&m), vec![(far, 0)]);
        assert!(started.elapsed() >= UPSTREAM_TIMEOUT);
        server.stop().await;
        stub.stop().await;
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse("4.3.2.1.in-addr.arpa."),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(
            parse_reverse("4.3.2.1.IN-ADDR.ARPA"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(parse_reverse("3.2.1.in-addr.arpa."), None);
        assert_eq!(parse_reverse("300.3.2.1.in-addr.arpa."), None);
        assert_eq!(parse_reverse("web.rsup."), None);
    }

    #[tokio::test]
    async fn refuses_to_relay_to_itself() {
        // Bind first to learn a free port, then ask the server to use itself
        // as upstream: it must answer NXDOMAIN, not loop.
        let probe = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port_addr = probe.local_addr().expect("addr");
        drop(probe);
        let server = DnsServer::start(
            port_addr,
            Arc::new(RwLock::new(Records::default())),
            vec![port_addr],
        )
        .await
        .expect("start");
        let m = ask_udp(server.local_addr(), "loop.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        server.stop().await;
    }
}
