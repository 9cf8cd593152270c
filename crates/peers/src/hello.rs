//! The text handshake (peers-protocol.md §1.2–§1.5).
//!
//! The connecting side sends three lines: `HAProxyS 2.1`, the callee's peer
//! name, and `<caller name> <pid> <relative pid>`. The accepting side answers
//! one status line. Lines end with `\n`; a `\r` before it is tolerated.

/// Status codes of the accepting side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Handshake OK, binary messages follow.
    Ok = 200,
    /// Try again later (HAProxy: the local peer already has a session).
    Retry = 300,
    /// Bad first line, or third line without a space.
    ProtocolError = 501,
    /// Version other than 2.0 or 2.1.
    BadVersion = 502,
    /// Line 2 is not the callee's name.
    BadCallee = 503,
    /// Line 3 names no peer of the section.
    UnknownPeer = 504,
}

impl Status {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// HAProxy's `show peers` label for a status.
    pub fn label(code: u16) -> &'static str {
        match code {
            200 => "ESTA",
            300 => "RETR",
            501 => "PROT",
            502 => "VERS",
            503 => "NAME",
            504 => "UNKN",
            _ => "NONE",
        }
    }
}

/// The version we speak.
pub const VERSION: (u32, u32) = (2, 1);

/// What a peer said in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `(2, 0)` or `(2, 1)`. A 2.0 peer must not be sent timed updates.
    pub version: (u32, u32),
    /// The name the caller believes we have (line 2).
    pub callee: String,
    /// The caller's own peer name (line 3, before the first space).
    pub caller: String,
}

/// The hello a connecting peer sends.
pub fn encode_hello(callee: &str, caller: &str, pid: u32) -> Vec<u8> {
    format!(
        "HAProxyS {}.{}\n{callee}\n{caller} {pid} 1\n",
        VERSION.0, VERSION.1
    )
    .into_bytes()
}

pub fn encode_status(status: u16) -> Vec<u8> {
    format!("{status}\n").into_bytes()
}

/// Strips the line terminator (`\n`, with an optional `\r` before it).
pub fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Checks line 1; returns the version or the status to refuse with.
pub fn parse_version_line(line: &[u8]) -> Result<(u32, u32), Status> {
    let rest = line
        .strip_prefix(b"HAProxyS ")
        .ok_or(Status::ProtocolError)?;
    let text = std::str::from_utf8(rest).map_err(|_| Status::BadVersion)?;
    let (maj, min) = text.split_once('.').ok_or(Status::BadVersion)?;
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (num(maj), num(min)) {
        (Some(2), Some(m)) if m <= 1 => Ok((2, m)),
        _ => Err(Status::BadVersion),
    }
}

/// Checks line 3; returns the caller's name.
pub fn parse_caller_line(line: &[u8]) -> Result<String, Status> {
    let sp = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(Status::ProtocolError)?;
    Ok(String::from_utf8_lossy(&line[..sp]).into_owned())
}

/// Parses a status line the way HAProxy does (`atoi`: leading digits).
pub fn parse_status_line(line: &[u8]) -> u16 {
    let digits: Vec<u8> = line
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .map_or(0, |v| v.min(u16::MAX as u32) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_bytes_match_haproxy() {
        assert_eq!(
            encode_hello("agg", "hap1", 8230),
            b"HAProxyS 2.1\nagg\nhap1 8230 1\n"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version_line(b"HAProxyS 2.1"), Ok((2, 1)));
        assert_eq!(parse_version_line(b"HAProxyS 2.0"), Ok((2, 0)));
        assert_eq!(parse_version_line(b"HAProxyS 2.2"), Err(Status::BadVersion));
        assert_eq!(parse_version_line(b"HAProxyS 3.0"), Err(Status::BadVersion));
        assert_eq!(
            parse_version_line(b"HAProxyS 2.1x"),
            Err(Status::BadVersion)
        );
        assert_eq!(parse_version_line(b"HAProxyS 2"), Err(Status::BadVersion));
        assert_eq!(
            parse_version_line(b"HAProxy 2.1"),
            Err(Status::ProtocolError)
        );
        assert_eq!(trim_line(b"HAProxyS 2.1\r\n"), b"HAProxyS 2.1");
    }

    #[test]
    fn caller_and_status() {
        assert_eq!(parse_caller_line(b"hap1 8230 1"), Ok("hap1".into()));
        assert_eq!(parse_caller_line(b"agg x"), Ok("agg".into()));
        assert_eq!(parse_caller_line(b"hap1"), Err(Status::ProtocolError));
        assert_eq!(parse_status_line(b"200"), 200);
        assert_eq!(parse_status_line(b"503 whatever"), 503);
        assert_eq!(parse_status_line(b"junk"), 0);
        assert_eq!(Status::label(504), "UNKN");
    }
}
