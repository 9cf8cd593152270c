//! The process's open-file limit, raised to fit `maxconn`, as HAProxy
//! does for its `maxsock`: each peer connection is a file descriptor, and
//! services start with a soft limit of 1024, which a thousand nodes exhaust
//! (accepting then fails with "Too many open files" until one goes away).
//! Only the soft limit moves, up to the hard one; it is never lowered.

/// Descriptors beyond the peer connections: listeners, the stats socket
/// and its clients, the metrics listener, the log file, the runtime's own
/// (epoll, wakers) and DNS lookups.
pub const RESERVE: u64 = 64;

/// What [`fit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// The soft limit was already enough.
    Enough { soft: u64 },
    /// The soft limit was raised.
    Raised { from: u64, to: u64 },
    /// The hard limit is below what `maxconn` needs: the soft limit is at
    /// the hard one, and connections beyond it will be refused.
    Short { soft: u64, hard: u64, wanted: u64 },
}

/// Raises the soft open-file limit to `maxconn` + [`RESERVE`] descriptors,
/// or as near as the hard limit allows.
pub fn fit(maxconn: usize) -> std::io::Result<Fit> {
    let wanted = (maxconn as u64).saturating_add(RESERVE);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= wanted {
        return Ok(Fit::Enough { soft });
    }
    let to = wanted.min(hard);
    if to > soft {
        lim.rlim_cur = to;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(if to < wanted {
        Fit::Short {
            soft: to.max(soft),
            hard,
            wanted,
        }
    } else {
        Fit::Raised { from: soft, to }
    })
}

/// [`fit`], logged: raising at info, a hard limit too low as a warning
/// that says what to change.
pub fn fit_and_log(maxconn: usize) {
    match fit(maxconn) {
        Ok(Fit::Enough { .. }) => {}
        Ok(Fit::Raised { from, to }) => {
            tracing::info!("open-file limit raised from {from} to {to} for maxconn {maxconn}")
        }
        Ok(Fit::Short { soft, hard, wanted }) => tracing::warn!(
            "maxconn {maxconn} needs {wanted} open files but the hard limit is {hard}: \
             the limit is {soft}, and connections beyond about {} will be refused; \
             raise the hard limit (ulimit -Hn, or LimitNOFILE= in the systemd unit)",
            soft.saturating_sub(RESERVE)
        ),
        Err(e) => tracing::warn!("cannot read or raise the open-file limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A limit already high enough is left alone (the test process's own
    /// limit is whatever the shell gave it; raising it is checked end to
    /// end in `tests/e2e_limits.rs`, in a child process).
    #[test]
    fn a_sufficient_limit_is_left_alone() {
        let before = match fit(0).unwrap() {
            Fit::Enough { soft } => soft,
            other => panic!("{other:?}"),
        };
        assert!(before >= RESERVE);
        assert_eq!(fit(0).unwrap(), Fit::Enough { soft: before });
    }
}
