//! A fake DNS server on 127.0.0.1 for the doctor's tests: UDP, answering A, AAAA and CNAME
//! from a small zone table, or NXDOMAIN, SERVFAIL, or nothing at all (for timeouts).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// What the server answers for one name.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Zone {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Both families.
    Dual(Ipv4Addr, Ipv6Addr),
    Cname(&'static str),
    NxDomain,
    ServFail,
    /// Never answers.
    Silent,
}

pub const TTL: u32 = 300;

pub struct FakeDns {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDns {
    pub async fn start(zones: &[(&'static str, Zone)]) -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zones: HashMap<String, Zone> = zones
            .iter()
            .map(|(n, z)| (n.to_string(), z.clone()))
            .collect();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(reply) = answer(&zones, &query) {
                    let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                }
            }
        });
        FakeDns { addr, task }
    }
}

fn answer(zones: &HashMap<String, Zone>, query: &Message) -> Option<Message> {
    let q = query.queries.first()?.clone();
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(q.clone());
    let mut name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    // Follow CNAMEs through the table, as a recursive resolver would.
    for _ in 0..8 {
        let owner = Name::from_ascii(format!("{name}.")).unwrap();
        match zones.get(&name) {
            None | Some(Zone::NxDomain) => {
                if reply.answers.is_empty() {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                return Some(reply);
            }
            Some(Zone::ServFail) => {
                reply.metadata.response_code = ResponseCode::ServFail;
                reply.answers.clear();
                return Some(reply);
            }
            Some(Zone::Silent) => return None,
            Some(Zone::Cname(target)) => {
                let target_name = Name::from_ascii(format!("{target}.")).unwrap();
                reply.add_answer(Record::from_rdata(
                    owner,
                    TTL,
                    RData::CNAME(CNAME(target_name)),
                ));
                name = target.to_string();
            }
            Some(zone) => {
                let (v4, v6) = match zone {
                    Zone::A(a) => (Some(*a), None),
                    Zone::Aaaa(a) => (None, Some(*a)),
                    Zone::Dual(a, b) => (Some(*a), Some(*b)),
                    _ => unreachable!(),
                };
                match (q.query_type, v4, v6) {
                    (RecordType::A, Some(a), _) => {
                        reply.add_answer(Record::from_rdata(owner, TTL, RData::A(A(a))));
                    }
                    (RecordType::AAAA, _, Some(a)) => {
                        reply.add_answer(Record::from_rdata(owner, TTL, RData::AAAA(AAAA(a))));
                    }
                    _ => {}
                }
                return Some(reply);
            }
        }
    }
    Some(reply)
}
