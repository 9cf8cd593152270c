//! The handshake: an accepting `Session` fed an arbitrary hello, or a
//! connecting one fed an arbitrary status line, in arbitrary chunks, with
//! time moving on so the hello timeout and, once established, heartbeats and
//! the silence timeout fire.
//!
//! Input: `flags`, `chunking`, `time step`, then the bytes the peer sends.
//! `flags` bit 0: connecting side; bit 1: refuse the hello (status chosen by
//! bits 2–4) instead of accepting it.
//!
//! Checks (besides the [`Harness`] invariants): the events are those of the
//! same bytes fed in one piece; the accepting side reports
//! at most one well-formed hello, answers exactly one status line and
//! nothing else before it is established; a refused or closed handshake
//! writes nothing after its status; the connecting side writes its hello
//! first and is established only on a `200` line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peers::hello::encode_hello;
use peers::{CloseReason, Event, Role, Status};
use peers_fuzz::{assert_same_meaning, chunks, Harness};

const REFUSALS: [Status; 5] = [
    Status::Retry,
    Status::ProtocolError,
    Status::BadVersion,
    Status::BadCallee,
    Status::UnknownPeer,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (flags, spec, step) = (data[0], data[1], data[2] as u64 * 25);
    let input = &data[3..];
    let connect = flags & 1 != 0;
    let mut h = Harness::new(role(flags), 1_000);
    h.flush();
    if connect {
        assert_eq!(h.out, encode_hello("hap1", "agg", 42));
    } else {
        assert!(h.out.is_empty());
    }
    let greeting = h.out.len();
    let mut hellos = 0;
    let mut status_at = None;
    let mut events = Vec::new();
    for chunk in chunks(spec, input) {
        h.advance(step);
        h.input(chunk);
        while let Some(ev) = h.event() {
            events.push(ev.clone());
            match ev {
                Event::HelloReceived(hello) => {
                    assert!(!connect);
                    hellos += 1;
                    assert_eq!(hellos, 1, "one hello per connection");
                    assert!(matches!(hello.version, (2, 0) | (2, 1)));
                    assert!(!hello.caller.contains(' '));
                    h.flush();
                    assert_eq!(h.out.len(), greeting, "nothing sent before the status");
                    decide(&mut h, flags);
                    h.flush();
                    let status = &h.out[greeting..];
                    assert!(status.starts_with(b"200\n") || flags & 2 != 0);
                    status_at = Some(h.out.len());
                }
                Event::Established { minor } => {
                    if connect {
                        assert_eq!(minor, 1);
                    } else {
                        assert!(hellos == 1 && flags & 2 == 0);
                    }
                }
                Event::Closed(CloseReason::SentStatus(code)) => {
                    assert!(!connect);
                    h.flush();
                    let line = format!("{code}\n");
                    assert_eq!(&h.out[greeting..], line.as_bytes());
                    status_at = Some(h.out.len());
                }
                Event::Closed(CloseReason::Refused(code)) => {
                    assert!(connect && code != 200);
                }
                Event::Closed(CloseReason::Protocol(_)) => assert!(h.established),
                _ => {}
            }
        }
        h.flush();
        if !h.established {
            // Before the handshake completes only the hello (connecting
            // side) or one status line (accepting side) is ever written.
            assert_eq!(h.out.len(), status_at.unwrap_or(greeting));
        }
    }
    // The same bytes in one piece mean the same.
    let mut whole = Harness::new(role(flags), 1_000);
    whole.input(input);
    let mut whole_events = Vec::new();
    while let Some(ev) = whole.event() {
        if matches!(ev, Event::HelloReceived(_)) {
            decide(&mut whole, flags);
        }
        whole_events.push(ev);
    }
    assert_same_meaning(&events, &whole_events);

    // A closed session stays quiet.
    if h.closed {
        let n = h.out.len();
        h.advance(60_000);
        h.input(b"HAProxyS 2.1\n");
        h.flush();
        assert_eq!(h.out.len(), n);
        assert!(h.event().is_none());
    }
});

fn role(flags: u8) -> Role {
    if flags & 1 != 0 {
        Role::Connect {
            callee: "hap1".into(),
            caller: "agg".into(),
            pid: 42,
        }
    } else {
        Role::Accept
    }
}

/// The application's answer to a hello, as `flags` says.
fn decide(h: &mut Harness, flags: u8) {
    if flags & 2 != 0 {
        h.s.refuse(REFUSALS[(flags >> 2) as usize % REFUSALS.len()]);
    } else {
        h.s.accept(h.now);
    }
}
