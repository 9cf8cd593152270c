//! State-machine tests in virtual time: bytes in, events and bytes out.

use super::*;
use crate::freq::FreqCtr;
use crate::registry::{data_type_by_name as by, KeyType};
use crate::table::Column;
use proptest::prelude::*;

fn accepted(now: u64) -> Session {
    let mut s = Session::new(Role::Accept, SessionConfig::default(), now);
    s.handle_input(b"HAProxyS 2.1\nagg\nhap1 8230 1\n", now);
    assert!(matches!(s.poll_event(), Some(Event::HelloReceived(_))));
    s.accept(now);
    assert_eq!(s.poll_event(), Some(Event::Established { minor: 1 }));
    assert_eq!(s.transmit().unwrap(), &b"200\n"[..]);
    s
}

fn rate_table(id: u64) -> TableDef {
    TableDef {
        id,
        name: "/request_rates".into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire: Some(30_000),
        columns: vec![
            Column::new(by("http_req_cnt").unwrap(), 1, 0),
            Column::new(by("http_req_rate").unwrap(), 1, 10_000),
        ],
        unknown_types: 0,
    }
}

fn framed(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    message::encode_table_msg(&mut v, ty, payload);
    v
}

fn drain(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn accepting_handshake_with_crlf() {
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(b"HAProxyS 2.0\r\nagg\r\n", 1);
    assert_eq!(s.poll_event(), None);
    s.handle_input(b"hap1 1 1\r\n", 2);
    assert_eq!(
        s.poll_event(),
        Some(Event::HelloReceived(Hello {
            version: (2, 0),
            callee: "agg".into(),
            caller: "hap1".into()
        }))
    );
    s.accept(3);
    assert_eq!(s.poll_event(), Some(Event::Established { minor: 0 }));
}

#[test]
fn hello_refusals() {
    for (input, code) in [
        (&b"HAProxyS 2.2\n"[..], 502),
        (b"GET / HTTP/1.1\n", 501),
        (b"HAProxyS 2.1\nagg\nnospace\n", 501),
    ] {
        let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
        s.handle_input(input, 0);
        assert!(s.is_closed(), "{input:?}");
        assert_eq!(s.transmit().unwrap(), format!("{code}\n").as_bytes());
        assert_eq!(
            drain(&mut s),
            vec![Event::Closed(CloseReason::SentStatus(code))]
        );
    }
    // The application refuses an unknown name.
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(b"HAProxyS 2.1\nagg\nstranger 1 1\n", 0);
    assert!(matches!(s.poll_event(), Some(Event::HelloReceived(_))));
    s.refuse(Status::UnknownPeer);
    assert_eq!(s.transmit().unwrap(), &b"504\n"[..]);
    assert!(s.is_closed());
}

#[test]
fn endless_hello_and_slow_hello_close_silently() {
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(&[b'x'; 600], 0);
    assert!(s.is_closed());
    assert_eq!(s.transmit(), None);
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(b"HAProxyS 2.1\n", 0);
    assert_eq!(s.poll_timeout(), Some(5_000));
    s.handle_timeout(4_999);
    assert!(!s.is_closed());
    s.handle_timeout(5_000);
    assert_eq!(
        drain(&mut s),
        vec![Event::Closed(CloseReason::HelloTimeout)]
    );
}

#[test]
fn connecting_side() {
    let role = Role::Connect {
        callee: "hap1".into(),
        caller: "agg".into(),
        pid: 42,
    };
    let mut s = Session::new(role.clone(), SessionConfig::default(), 0);
    assert_eq!(
        s.transmit().unwrap(),
        &b"HAProxyS 2.1\nhap1\nagg 42 1\n"[..]
    );
    // Status and first binary message in one read.
    s.handle_input(b"200\n\x00\x00", 5);
    assert_eq!(
        drain(&mut s),
        vec![Event::Established { minor: 1 }, Event::ResyncRequest]
    );
    let mut s = Session::new(role, SessionConfig::default(), 0);
    s.handle_input(b"503\n", 5);
    assert_eq!(
        drain(&mut s),
        vec![Event::Closed(CloseReason::Refused(503))]
    );
}

#[test]
fn finished_and_partial_are_confirmed() {
    let mut s = accepted(0);
    s.handle_input(&[0, 1, 0, 2, 0, 4], 10);
    assert_eq!(
        drain(&mut s),
        vec![
            Event::ResyncFinished,
            Event::ResyncPartial,
            Event::Heartbeat
        ]
    );
    assert_eq!(s.transmit().unwrap(), &[0, 3, 0, 3][..]);
    // A CONFIRM is never sent unsolicited.
    s.handle_input(&[0, 3], 11);
    assert_eq!(s.transmit(), None);
}

#[test]
fn define_update_and_lazy_ack() {
    let mut s = accepted(0);
    let def = rate_table(3);
    let mut payload = Vec::new();
    def.encode(&mut payload);
    let mut input = framed(update::MSG_DEFINE, &payload);
    for (id, cnt) in [(7u32, 1u32), (9, 2)] {
        let mut p = Vec::new();
        let vals = [
            Value::U32(cnt),
            Value::Freq(FreqCtr {
                elapsed: 5,
                curr: cnt,
                prev: 0,
            }),
        ];
        update::encode_update(
            &mut p,
            &def,
            id,
            None,
            &[127, 0, 0, 1],
            &vals,
            &mut Default::default(),
        )
        .unwrap();
        input.extend(framed(update::MSG_UPDATE, &p));
    }
    s.handle_input(&input, 100);
    let ev = drain(&mut s);
    assert_eq!(ev.len(), 3);
    assert!(
        matches!(&ev[0], Event::TableDefined { remote_id: 3, def } if def.name == "/request_rates")
    );
    match &ev[2] {
        Event::Update {
            remote_id: 3,
            update,
            ..
        } => {
            assert_eq!(update.id, 9);
            assert_eq!(update.values[0], Value::U32(2));
        }
        e => panic!("{e:?}"),
    }
    // One ACK for the table, carrying the last id received.
    assert_eq!(
        s.transmit().unwrap(),
        &framed(update::MSG_ACK, &[3, 0, 0, 0, 9])[..]
    );
}

#[test]
fn last_update_id_survives_a_redefinition() {
    let mut s = accepted(0);
    let def = rate_table(3);
    let mut payload = Vec::new();
    def.encode(&mut payload);
    let vals = [Value::U32(1), Value::Freq(FreqCtr::default())];
    let mut upd = Vec::new();
    update::encode_update(
        &mut upd,
        &def,
        41,
        None,
        &[127, 0, 0, 1],
        &vals,
        &mut Default::default(),
    )
    .unwrap();
    let mut input = framed(update::MSG_DEFINE, &payload);
    input.extend(framed(update::MSG_UPDATE, &upd));
    input.extend(framed(update::MSG_DEFINE, &payload));
    // Incremental form: key + values only, id = previous + 1.
    input.extend(framed(update::MSG_UPDATE_INCR, &upd[4..]));
    s.handle_input(&input, 1);
    let ids: Vec<u32> = drain(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Update { update, .. } => Some(update.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![41, 42]);
}

#[test]
fn rejected_table_updates_are_ignored_without_ack() {
    let mut s = accepted(0);
    // Key type 3 does not exist.
    let define = framed(update::MSG_DEFINE, &[4, 2, b'/', b'x', 3, 4, 0, 0]);
    let garbage = framed(update::MSG_UPDATE, &[0xFF, 0xFF]);
    s.handle_input(&[define, garbage].concat(), 1);
    let ev = drain(&mut s);
    assert!(
        matches!(&ev[..], [Event::TableRejected { remote_id: 4, .. }]),
        "{ev:?}"
    );
    assert!(!s.is_closed());
    assert_eq!(s.transmit(), None);
}

#[test]
fn update_before_any_definition_is_ignored() {
    let mut s = accepted(0);
    s.handle_input(&framed(update::MSG_UPDATE, &[0, 0, 0, 1, 127, 0, 0, 1]), 1);
    assert_eq!(drain(&mut s), vec![]);
    assert!(!s.is_closed());
}

#[test]
fn protocol_and_size_errors_close_with_error_message() {
    let mut s = accepted(0);
    s.handle_input(&[255, 0], 1);
    assert_eq!(s.transmit().unwrap(), &[1, 0][..]);
    assert!(matches!(
        drain(&mut s)[..],
        [Event::Closed(CloseReason::Protocol(
            DecodeError::ReservedClass { offset: 29 }
        ))]
    ));

    let mut s = accepted(0);
    let mut big = vec![10, 0x80];
    crate::varint::encode(20_000, &mut big);
    s.handle_input(&big, 1);
    assert_eq!(s.transmit().unwrap(), &[1, 1][..]);
    assert!(s.is_closed());

    // A truncated update of a known table is a protocol error.
    let mut s = accepted(0);
    let mut payload = Vec::new();
    rate_table(1).encode(&mut payload);
    let mut input = framed(update::MSG_DEFINE, &payload);
    input.extend(framed(update::MSG_UPDATE, &[0, 0, 0, 1, 127, 0]));
    s.handle_input(&input, 1);
    assert_eq!(s.transmit().unwrap(), &[1, 0][..]);
}

#[test]
fn heartbeats_and_silence() {
    let mut s = accepted(0);
    assert_eq!(s.poll_timeout(), Some(2_000));
    s.handle_timeout(2_000);
    assert_eq!(s.transmit().unwrap(), &[0, 4][..]);
    assert_eq!(s.poll_timeout(), Some(4_000));
    s.handle_input(&[0, 4], 3_000);
    s.handle_timeout(4_000);
    assert_eq!(s.transmit().unwrap(), &[0, 4][..]);
    assert_eq!(s.poll_timeout(), Some(6_000));
    s.handle_timeout(7_999);
    assert!(!s.is_closed());
    s.handle_timeout(8_000);
    assert!(matches!(
        drain(&mut s).last(),
        Some(Event::Closed(CloseReason::Silence))
    ));
}

/// Input read but not yet handed over (the application is behind) keeps
/// the session alive; once it stops, silence counts from then.
#[test]
fn pending_input_is_not_silence() {
    let mut s = accepted(0);
    s.note_input_pending(4_000);
    s.handle_timeout(5_000);
    assert!(!s.is_closed());
    assert_eq!(s.poll_timeout(), Some(7_000));
    // Its heartbeat is still due: we have been silent ourselves.
    assert_eq!(s.transmit().unwrap(), &[0, 4][..]);
    s.handle_timeout(8_999);
    assert!(!s.is_closed());
    s.handle_timeout(9_000);
    assert!(s.is_closed());
    // Before the handshake it means nothing.
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.note_input_pending(1_000);
    assert_eq!(
        s.poll_timeout(),
        Some(SessionConfig::default().hello_timeout_ms)
    );
}

#[test]
fn sending_defines_first_and_uses_explicit_ids() {
    let mut s = accepted(0);
    let def = Arc::new(rate_table(1));
    s.declare_table(def.clone());
    let vals = [
        Value::U32(3),
        Value::Freq(FreqCtr {
            elapsed: 0,
            curr: 3,
            prev: 0,
        }),
    ];
    assert_eq!(s.send_update(1, &[10, 0, 0, 1], &vals, None, 5), Ok(1));
    assert_eq!(
        s.send_update(1, &[10, 0, 0, 2], &vals, Some(1000), 5),
        Ok(2)
    );
    let out = s.transmit().unwrap();
    // DEFINE, then 0x80 with id 1, then 0x85 with id 2 (never 0x81/0x86).
    let (f1, n1) = message::next_frame(&out, 16384, 0).unwrap().unwrap();
    assert!(matches!(
        f1,
        Frame::Table {
            ty: update::MSG_DEFINE,
            ..
        }
    ));
    let (f2, n2) = message::next_frame(&out[n1..], 16384, 0).unwrap().unwrap();
    assert!(
        matches!(f2, Frame::Table { ty: update::MSG_UPDATE, payload, .. } if payload[..4] == [0, 0, 0, 1])
    );
    let (f3, _) = message::next_frame(&out[n1 + n2..], 16384, 0)
        .unwrap()
        .unwrap();
    assert!(
        matches!(f3, Frame::Table { ty: update::MSG_UPDATE_TIMED, payload, .. } if payload[..4] == [0, 0, 0, 2])
    );
    // Another table in between forces a new DEFINE on return.
    let mut other = rate_table(2);
    other.name = "/other".into();
    s.declare_table(Arc::new(other));
    s.send_update(2, &[10, 0, 0, 1], &vals, None, 6).unwrap();
    s.send_update(1, &[10, 0, 0, 1], &vals, None, 6).unwrap();
    let out = s.transmit().unwrap();
    let defines = count_type(&out, update::MSG_DEFINE);
    assert_eq!(defines, 2);
}

fn count_type(mut buf: &[u8], want: u8) -> usize {
    let mut n = 0;
    while let Ok(Some((f, used))) = message::next_frame(buf, 16384, 0) {
        if matches!(f, Frame::Table { ty, .. } if ty == want) {
            n += 1;
        }
        buf = &buf[used..];
    }
    n
}

#[test]
fn oversized_update_is_refused_not_sent() {
    let mut s = accepted(0);
    let def = TableDef {
        id: 1,
        name: "/s".into(),
        key_type: KeyType::String,
        key_len: 30_000,
        expire: None,
        columns: vec![],
        unknown_types: 0,
    };
    s.declare_table(Arc::new(def));
    let key = vec![b'k'; 20_000];
    assert!(matches!(
        s.send_update(1, &key, &[], None, 1),
        Err(EncodeError::TooLarge { .. })
    ));
    // Only the DEFINE went out.
    assert_eq!(count_type(&s.transmit().unwrap(), update::MSG_DEFINE), 1);
}

#[test]
fn two_point_zero_peers_get_untimed_updates() {
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(b"HAProxyS 2.0\nagg\nhap1 1 1\n", 0);
    s.poll_event();
    s.accept(0);
    s.transmit();
    s.declare_table(Arc::new(rate_table(1)));
    let vals = [Value::U32(1), Value::Freq(FreqCtr::default())];
    s.send_update(1, &[1, 2, 3, 4], &vals, Some(500), 1)
        .unwrap();
    let out = s.transmit().unwrap();
    assert_eq!(count_type(&out, update::MSG_UPDATE_TIMED), 0);
    assert_eq!(count_type(&out, update::MSG_UPDATE), 1);
}

#[test]
fn dictionaries_are_per_connection() {
    let def = Arc::new(TableDef {
        id: 1,
        name: "/sessions".into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire: Some(1000),
        columns: vec![
            Column::new(by("server_id").unwrap(), 1, 0),
            Column::new(by("server_key").unwrap(), 1, 0),
        ],
        unknown_types: 0,
    });
    let vals = [Value::ServerId(1), Value::dict("s1")];
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let mut s = accepted(0);
        s.declare_table(def.clone());
        s.send_update(1, &[1, 1, 1, 1], &vals, None, 1).unwrap();
        s.send_update(1, &[1, 1, 1, 2], &vals, None, 1).unwrap();
        sizes.push(s.transmit().unwrap().len());
    }
    // The second connection defines "s1" again instead of referencing a slot
    // the new peer never saw.
    assert_eq!(sizes[0], sizes[1]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)) {
        let mut a = accepted(0);
        let mut b = Session::new(Role::Accept, SessionConfig::default(), 0);
        for (i, c) in chunks.iter().enumerate() {
            a.handle_input(c, i as u64);
            b.handle_input(c, i as u64);
            if let Some(Event::HelloReceived(_)) = b.poll_event() {
                b.accept(i as u64);
            }
        }
        let _ = drain(&mut a);
        let _ = a.transmit();
    }

    #[test]
    fn arbitrary_table_messages_never_panic(define in proptest::collection::vec(any::<u8>(), 0..40),
                                            upd in proptest::collection::vec(any::<u8>(), 0..80),
                                            ty in 0x80u8..0x87) {
        let mut s = accepted(0);
        let mut input = framed(update::MSG_DEFINE, &define);
        input.extend(framed(ty, &upd));
        s.handle_input(&input, 1);
        let _ = drain(&mut s);
    }
}
