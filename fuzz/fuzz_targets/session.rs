//! An established accepting `Session` fed arbitrary bytes in arbitrary
//! chunks while time moves on (heartbeats, silence timeout).
//!
//! Input: `chunking`, `time step`, `flags`, then the peer's binary stream.
//! `flags` bit 0: send every received update straight back to the peer
//! (declaring its table under the same id), exercising the encoder with
//! whatever the decoder accepted; bit 1: the peer speaks 2.0 (no timed
//! updates may be sent); bit 2: answer resync requests with a FINISHED.
//!
//! Checks (besides the [`Harness`] invariants): never panics; the events
//! are those of the same bytes fed in one piece; echoing a
//! decoded update fails only for size; everything the session writes after
//! its `200` is a clean stream of frames; and a second session reading that
//! stream never sees a protocol error and decodes exactly the updates that
//! were sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peers::message::{next_frame, DEFAULT_MAX_MESSAGE};
use peers::{CloseReason, EncodeError, Event, Role, Value};
use peers_fuzz::{after_round_trip, assert_same_meaning, chunks, Harness};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (spec, step, flags) = (data[0], data[1] as u64 * 25, data[2]);
    let input = &data[3..];
    let (echo, old_peer, teach) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);

    let mut h = established(old_peer);
    let binary_from = h.out.len();
    let mut events = Vec::new();

    // (key, values, expire) of every update echoed, in order.
    let mut sent: Vec<(Vec<u8>, Vec<Value>, Option<u32>)> = Vec::new();
    for chunk in chunks(spec, input) {
        h.advance(step);
        h.input(chunk);
        while let Some(ev) = h.event() {
            events.push(ev.clone());
            match ev {
                Event::Update { remote_id, update } if echo && h.s.is_established() => {
                    // The definition it was decoded with (see `Harness::defs`).
                    h.s.declare_table(h.defs[&remote_id].clone());
                    let r = h.s.send_update(
                        remote_id,
                        &update.key,
                        &update.values,
                        update.expire,
                        h.now,
                    );
                    match r {
                        Ok(_) => sent.push((
                            update.key.to_vec(),
                            update.values.iter().map(after_round_trip).collect(),
                            if old_peer { None } else { update.expire },
                        )),
                        Err(EncodeError::TooLarge { .. }) => {}
                        Err(e) => panic!("echoing a decoded update: {e}"),
                    }
                }
                Event::ResyncRequest if teach => h.s.send_resync_end(false, h.now),
                Event::Closed(CloseReason::SentStatus(_) | CloseReason::Refused(_)) => {
                    panic!("handshake outcome after the handshake")
                }
                _ => {}
            }
        }
        h.flush();
    }

    // The same bytes in one piece mean the same.
    let mut whole = established(old_peer);
    whole.input(input);
    let whole: Vec<Event> = std::iter::from_fn(|| whole.event()).collect();
    assert_same_meaning(&events, &whole);

    // What we wrote is a clean sequence of frames...
    let stream = &h.out[binary_from..];
    let mut rest = stream;
    while !rest.is_empty() {
        match next_frame(rest, DEFAULT_MAX_MESSAGE, 0) {
            Ok(Some((_, used))) => rest = &rest[used..],
            other => panic!("our own output does not frame: {other:?}"),
        }
    }

    // ...that a peer decodes without error, finding what we sent.
    let mut mirror = Harness::new(
        Role::Connect {
            callee: "agg".into(),
            caller: "hap1".into(),
            pid: 1,
        },
        h.now,
    );
    mirror.input(b"200\n");
    mirror.input(stream);
    let mut got = Vec::new();
    while let Some(ev) = mirror.event() {
        match ev {
            Event::Update { update, .. } => {
                got.push((update.key.to_vec(), update.values.to_vec(), update.expire))
            }
            Event::Closed(reason) => panic!("our own output closed a peer: {reason:?}"),
            _ => {}
        }
    }
    assert_eq!(got, sent);
});

/// An accepting session past a 2.1 (or 2.0) hello, at time 0.
fn established(old_peer: bool) -> Harness {
    let mut h = Harness::new(Role::Accept, 0);
    let hello: &[u8] = if old_peer {
        b"HAProxyS 2.0\nagg\nhap1 8230 1\n"
    } else {
        b"HAProxyS 2.1\nagg\nhap1 8230 1\n"
    };
    h.input(hello);
    assert!(matches!(h.event(), Some(Event::HelloReceived(_))));
    assert!(h.event().is_none());
    h.s.accept(0);
    assert_eq!(
        h.event(),
        Some(Event::Established {
            minor: if old_peer { 0 } else { 1 }
        })
    );
    h.flush();
    assert_eq!(h.out, b"200\n");
    h
}
