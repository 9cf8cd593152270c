use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one stats-socket command may take. Generous because a `show table`
/// of a big table on a loaded 2-core CI machine can be slow, but bounded so a
/// wedged process fails the test instead of hanging it.
const STATS_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends one command to a stats socket and returns the whole answer.
///
/// Uses the non-interactive mode of HAProxy's CLI: write `cmd\n`, and the
/// server answers and closes, so the answer is everything up to EOF. stickagg's
/// own stats socket follows the same convention, so this works for both.
/// The write side is deliberately not shut down early: the CLI would take the
/// half-close as the client going away.
pub fn stats_cmd(path: &Path, cmd: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(STATS_TIMEOUT))?;
    stream.set_write_timeout(Some(STATS_TIMEOUT))?;
    let mut line = cmd.trim_end_matches('\n').to_owned();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    String::from_utf8(answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
