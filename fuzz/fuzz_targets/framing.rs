//! `message::next_frame` over an arbitrary byte stream, frame after frame,
//! with HAProxy's message limit and with a tiny one.
//!
//! Checks: no panic; every frame consumes at least its two header bytes and
//! no more than the input; a table payload is exactly the frame's tail and
//! its offset is absolute; and every strict prefix of a frame asks for more
//! bytes instead of failing or yielding another frame (the session relies on
//! this when the frame arrives in pieces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peers::message::{next_frame, Frame, DEFAULT_MAX_MESSAGE};

fn walk(data: &[u8], max: usize) {
    let mut rest = data;
    let mut base = 0u64;
    loop {
        match next_frame(rest, max, base) {
            Ok(None) => break,
            Err(_) => {
                // An error is final; but a shorter prefix must never have
                // produced a different frame, which the loop already checked.
                break;
            }
            Ok(Some((frame, used))) => {
                assert!(
                    used >= 2 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                if let Frame::Table {
                    payload, offset, ..
                } = &frame
                {
                    let start = used - payload.len();
                    assert!(start >= 3, "a table message has a length byte");
                    assert_eq!(*payload, &rest[start..used]);
                    assert_eq!(*offset, base + start as u64);
                    assert!(payload.len() <= max);
                }
                for k in [used - 1, used / 2, 1] {
                    if k < used {
                        assert_eq!(
                            next_frame(&rest[..k], max, base),
                            Ok(None),
                            "a {k}-byte prefix of a {used}-byte frame"
                        );
                    }
                }
                rest = &rest[used..];
                base += used as u64;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    walk(data, DEFAULT_MAX_MESSAGE);
    walk(data, 64);
});
