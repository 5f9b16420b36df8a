//! MQTT 3.1.1 and 5 on the wire, through rumqttc's packet codecs (`mqttbytes::v4` and `v5`),
//! reduced to what the endpoint needs: the packets a device sends, and the answers trackgate
//! gives. The version is fixed by the CONNECT's protocol level, read before either codec runs.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, v4};
use rumqttc::v5::mqttbytes::{self as mqttbytes5, v5};

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// What a device sends, whichever the version.
#[derive(Debug)]
pub enum Incoming {
    Connect {
        /// Free: not an identity (the username is), logged for support.
        client_id: String,
        keep_alive: u16,
        login: Option<(String, String)>,
    },
    Publish {
        topic: String,
        qos: Qos,
        pkid: u16,
        payload: Bytes,
    },
    /// A device's PUBACK for a rejections message trackgate sent.
    PubAck,
    Subscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect,
    /// QoS 2 flow packets and the like, which the endpoint does not take.
    Unsupported(&'static str),
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// More bytes are needed.
    Incomplete,
    /// Over the maximum packet size.
    TooLarge,
    /// Not MQTT, or not the version the connection speaks.
    Malformed(String),
}

/// The protocol level of a CONNECT at the start of `buf`: `None` until enough bytes are there.
pub fn connect_level(buf: &[u8]) -> Result<Option<u8>, ReadError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    if first >> 4 != 1 {
        return Err(ReadError::Malformed("the first packet is not CONNECT".into()));
    }
    // Remaining length: 1 to 4 bytes of 7 bits.
    let mut at = 1;
    loop {
        let Some(&b) = buf.get(at) else { return Ok(None) };
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(ReadError::Malformed("bad remaining length".into()));
        }
    }
    // Protocol name: a two-byte length, then the name; then the level.
    let (Some(&hi), Some(&lo)) = (buf.get(at), buf.get(at + 1)) else {
        return Ok(None);
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    Ok(buf.get(at + 2 + name_len).copied())
}

/// A PUBLISH's quality of service, whichever the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0.
    AtMost,
    /// QoS 1.
    AtLeast,
    /// QoS 2.
    Exactly,
}

impl From<mqttbytes::QoS> for Qos {
    fn from(q: mqttbytes::QoS) -> Qos {
        match q {
            mqttbytes::QoS::AtMostOnce => Qos::AtMost,
            mqttbytes::QoS::AtLeastOnce => Qos::AtLeast,
            mqttbytes::QoS::ExactlyOnce => Qos::Exactly,
        }
    }
}

impl From<mqttbytes5::QoS> for Qos {
    fn from(q: mqttbytes5::QoS) -> Qos {
        match q {
            mqttbytes5::QoS::AtMostOnce => Qos::AtMost,
            mqttbytes5::QoS::AtLeastOnce => Qos::AtLeast,
            mqttbytes5::QoS::ExactlyOnce => Qos::Exactly,
        }
    }
}

impl Version {
    /// Read the next whole packet out of `buf`.
    pub fn read(self, buf: &mut BytesMut, max: usize) -> Result<Incoming, ReadError> {
        match self {
            Version::V311 => read_v4(buf, max),
            Version::V5 => read_v5(buf, max),
        }
    }
}

fn map_error(e: mqttbytes::Error) -> ReadError {
    match e {
        mqttbytes::Error::InsufficientBytes(_) => ReadError::Incomplete,
        mqttbytes::Error::PayloadSizeLimitExceeded(_) => ReadError::TooLarge,
        other => ReadError::Malformed(other.to_string()),
    }
}

fn read_v4(buf: &mut BytesMut, max: usize) -> Result<Incoming, ReadError> {
    Ok(match v4::Packet::read(buf, max).map_err(map_error)? {
        v4::Packet::Connect(c) => Incoming::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            login: c.login.map(|l| (l.username, l.password)),
        },
        v4::Packet::Publish(p) => Incoming::Publish {
            topic: p.topic,
            qos: p.qos.into(),
            pkid: p.pkid,
            payload: p.payload,
        },
        v4::Packet::PubAck(_) => Incoming::PubAck,
        v4::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| f.path).collect(),
        },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect,
        _ => Incoming::Unsupported("a packet a client does not send, or QoS 2"),
    })
}

fn read_v5(buf: &mut BytesMut, max: usize) -> Result<Incoming, ReadError> {
    // rumqttc's v5 reader wants a body on every packet but PINGREQ; a DISCONNECT may have none.
    if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
        let _ = buf.split_to(2);
        return Ok(Incoming::Disconnect);
    }
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    let packet = v5::Packet::read(buf, Some(max)).map_err(|e| match e {
        mqttbytes5::Error::InsufficientBytes(_) => ReadError::Incomplete,
        mqttbytes5::Error::PayloadSizeLimitExceeded { .. } => ReadError::TooLarge,
        other => ReadError::Malformed(other.to_string()),
    })?;
    Ok(match packet {
        v5::Packet::Connect(c, _will, login) => Incoming::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            login: login.map(|l| (l.username, l.password)),
        },
        v5::Packet::Publish(p) => Incoming::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            qos: p.qos.into(),
            pkid: p.pkid,
            payload: p.payload,
        },
        v5::Packet::PubAck(_) => Incoming::PubAck,
        v5::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| f.path).collect(),
        },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(_) => Incoming::Disconnect,
        _ => Incoming::Unsupported("a packet a client does not send, QoS 2, or AUTH"),
    })
}

/// The answers trackgate sends, whichever the version.
#[derive(Debug)]
pub enum Outgoing {
    /// Accepted, announcing how many unacknowledged messages the device may have in flight
    /// (MQTT 5 Receive Maximum) and the largest packet.
    ConnAck {
        receive_max: u16,
        max_packet: u32,
    },
    /// Refused: bad credentials (or not authorized), or an unsupported protocol level.
    ConnRefused(Refusal),
    PubAck {
        pkid: u16,
        denied: bool,
    },
    SubAck {
        pkid: u16,
        granted: Vec<bool>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    /// The rejections of a message, QoS 1, to the device's rejections topic.
    Publish {
        topic: String,
        pkid: u16,
        payload: Bytes,
    },
    /// MQTT 5 only (3.1.1 has no server DISCONNECT: the connection is closed).
    Disconnect(DisconnectReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadCredentials,
    UnsupportedVersion,
    /// The key store did not answer: try again later.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    ShuttingDown,
    KeepAliveTimeout,
    PacketTooLarge,
    QosNotSupported,
    Protocol,
    /// A message could not be committed: reconnect and send again.
    Unavailable,
}

impl Version {
    /// Encode `out` onto `buf`.
    pub fn write(self, out: Outgoing, buf: &mut BytesMut) {
        let written = match self {
            Version::V311 => write_v4(out, buf),
            Version::V5 => write_v5(out, buf),
        };
        debug_assert!(written, "an answer trackgate builds always encodes");
    }
}

fn write_v4(out: Outgoing, buf: &mut BytesMut) -> bool {
    let packet = match out {
        Outgoing::ConnAck { .. } => v4::Packet::ConnAck(v4::ConnAck {
            session_present: false,
            code: v4::ConnectReturnCode::Success,
        }),
        Outgoing::ConnRefused(r) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: false,
            code: match r {
                Refusal::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                Refusal::UnsupportedVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
                Refusal::Unavailable => v4::ConnectReturnCode::ServiceUnavailable,
            },
        }),
        // 3.1.1 cannot refuse a PUBLISH: a denied one is acknowledged and dropped (as Mosquitto
        // does for a topic its ACL denies).
        Outgoing::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck { pkid }),
        Outgoing::SubAck { pkid, granted } => v4::Packet::SubAck(v4::SubAck {
            pkid,
            return_codes: granted
                .into_iter()
                .map(|ok| {
                    if ok {
                        v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtLeastOnce)
                    } else {
                        v4::SubscribeReasonCode::Failure
                    }
                })
                .collect(),
        }),
        Outgoing::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck { pkid }),
        Outgoing::PingResp => v4::Packet::PingResp,
        Outgoing::Publish { topic, pkid, payload } => {
            let mut p = v4::Publish::new(topic, mqttbytes::QoS::AtLeastOnce, payload.to_vec());
            p.pkid = pkid;
            v4::Packet::Publish(p)
        }
        Outgoing::Disconnect(_) => return true,
    };
    packet.write(buf, usize::MAX).is_ok()
}

fn write_v5(out: Outgoing, buf: &mut BytesMut) -> bool {
    let packet = match out {
        Outgoing::ConnAck {
            receive_max,
            max_packet,
        } => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: v5::ConnectReturnCode::Success,
            properties: Some(v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: Some(receive_max),
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(max_packet),
                assigned_client_identifier: None,
                topic_alias_max: Some(0),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(0),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }),
        Outgoing::ConnRefused(r) => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: match r {
                Refusal::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                Refusal::UnsupportedVersion => v5::ConnectReturnCode::UnsupportedProtocolVersion,
                Refusal::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
            },
            properties: None,
        }),
        Outgoing::PubAck { pkid, denied } => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: if denied {
                v5::PubAckReason::NotAuthorized
            } else {
                v5::PubAckReason::Success
            },
            properties: None,
        }),
        Outgoing::SubAck { pkid, granted } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: granted
                .into_iter()
                .map(|ok| {
                    if ok {
                        v5::SubscribeReasonCode::Success(mqttbytes5::QoS::AtLeastOnce)
                    } else {
                        v5::SubscribeReasonCode::NotAuthorized
                    }
                })
                .collect(),
            properties: None,
        }),
        Outgoing::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Outgoing::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outgoing::Publish { topic, pkid, payload } => {
            let mut p = v5::Publish::new(topic, mqttbytes5::QoS::AtLeastOnce, payload, None);
            p.pkid = pkid;
            v5::Packet::Publish(p)
        }
        Outgoing::Disconnect(reason) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: match reason {
                DisconnectReason::ShuttingDown => v5::DisconnectReasonCode::ServerShuttingDown,
                DisconnectReason::KeepAliveTimeout => v5::DisconnectReasonCode::KeepAliveTimeout,
                DisconnectReason::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
                DisconnectReason::QosNotSupported => v5::DisconnectReasonCode::QoSNotSupported,
                DisconnectReason::Protocol => v5::DisconnectReasonCode::ProtocolError,
                DisconnectReason::Unavailable => v5::DisconnectReasonCode::ServerBusy,
            },
            properties: None,
        }),
    };
    packet.write(buf, None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_v4(user: &str, pass: &str) -> BytesMut {
        let mut c = v4::Connect::new("dev-client");
        c.set_login(user, pass);
        let mut buf = BytesMut::new();
        v4::Packet::Connect(c).write(&mut buf, usize::MAX).unwrap();
        buf
    }

    #[test]
    fn the_protocol_level_is_read_before_either_codec() {
        let buf = connect_v4("TRK-0001", "pw");
        assert_eq!(connect_level(&buf).unwrap(), Some(4));
        assert_eq!(connect_level(&buf[..3]).unwrap(), None, "incomplete");
        let mut v5buf = BytesMut::new();
        v5::Packet::Connect(
            v5::Connect {
                keep_alive: 30,
                client_id: "c".into(),
                clean_start: true,
                properties: None,
            },
            None,
            None,
        )
        .write(&mut v5buf, None)
        .unwrap();
        assert_eq!(connect_level(&v5buf).unwrap(), Some(5));
        assert!(connect_level(&[0x30, 0]).is_err(), "a PUBLISH first is refused");
    }

    #[test]
    fn a_v4_connect_gives_its_login_and_packets_round_trip() {
        let mut buf = connect_v4("TRK-0001", "pw");
        match Version::V311.read(&mut buf, 1024).unwrap() {
            Incoming::Connect { client_id, login, .. } => {
                assert_eq!(client_id, "dev-client");
                assert_eq!(login, Some(("TRK-0001".into(), "pw".into())));
            }
            other => panic!("{other:?}"),
        }
        let mut p = v4::Publish::new("devices/TRK-0001/telemetry", mqttbytes::QoS::AtLeastOnce, vec![1; 2000]);
        p.pkid = 7;
        let mut buf = BytesMut::new();
        v4::Packet::Publish(p).write(&mut buf, usize::MAX).unwrap();
        assert!(matches!(
            Version::V311.read(&mut buf.clone(), 1000),
            Err(ReadError::TooLarge)
        ));
        let mut short = BytesMut::from(&buf[..100]);
        assert!(matches!(
            Version::V311.read(&mut short, 4096),
            Err(ReadError::Incomplete)
        ));
        match Version::V311.read(&mut buf, 4096).unwrap() {
            Incoming::Publish {
                topic, pkid, payload, ..
            } => {
                assert_eq!(
                    (topic.as_str(), pkid, payload.len()),
                    ("devices/TRK-0001/telemetry", 7, 2000)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v5_announces_receive_maximum_and_refuses_with_reason_codes() {
        let mut buf = BytesMut::new();
        Version::V5.write(
            Outgoing::ConnAck {
                receive_max: 16,
                max_packet: 4096,
            },
            &mut buf,
        );
        match v5::Packet::read(&mut buf, None).unwrap() {
            v5::Packet::ConnAck(a) => {
                let p = a.properties.unwrap();
                assert_eq!((p.receive_max, p.max_qos), (Some(16), Some(1)));
            }
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::new();
        Version::V5.write(Outgoing::PubAck { pkid: 3, denied: true }, &mut buf);
        match v5::Packet::read(&mut buf, None).unwrap() {
            v5::Packet::PubAck(a) => assert_eq!((a.pkid, a.reason), (3, v5::PubAckReason::NotAuthorized)),
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&[0xE0u8, 0][..]);
        assert!(matches!(Version::V5.read(&mut buf, 16).unwrap(), Incoming::Disconnect));
    }
}
