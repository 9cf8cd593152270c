use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::stats::stats_cmd;
use crate::table::{parse_show_table, TableEntry};

/// How long HAProxy may take to parse its config and open its stats socket.
/// It normally takes ~10 ms; the bound only catches a process that is stuck.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The HAProxy versions stickagg is tested against.
///
/// 2.6 is what Debian 12 ships (`apt-get install haproxy`); 3.0 is the current
/// LTS, built from Debian trixie's source by `scripts/install-haproxy`. Both
/// speak peers protocol 2.1 but differ in details stickagg must cope with
/// (see shared/docs/peers-protocol.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V26,
    V30,
}

impl Version {
    /// Every version, for tests that run against all of them.
    pub const ALL: [Version; 2] = [Version::V26, Version::V30];

    /// `"2.6"` or `"3.0"`, as `haproxy -v` and `scripts/install-haproxy` print it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V26 => "2.6",
            Version::V30 => "3.0",
        }
    }

    /// The environment variable that `scripts/test` sets to the binary's path.
    pub const fn env_var(self) -> &'static str {
        match self {
            Version::V26 => "STICKAGG_HAPROXY_26",
            Version::V30 => "STICKAGG_HAPROXY_30",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where `scripts/install-haproxy` caches its 3.0 build (same default, same
/// `HAPROXY_CACHE` override), so tests find it without `scripts/test` too.
fn default_v30_path() -> Option<PathBuf> {
    let cache = match std::env::var_os("HAPROXY_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache/haproxy-builds"),
    };
    Some(cache.join("3.0.11/haproxy"))
}

/// True if `bin -v` says it is HAProxy `version` (e.g. "version 2.6.12-1+deb12u4").
fn reports_version(bin: &Path, version: Version) -> bool {
    let Ok(out) = Command::new(bin).arg("-v").stdin(Stdio::null()).output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    first.starts_with("HAProxy version ")
        && first.contains(&format!("version {}.", version.as_str()))
}

fn find_binary(version: Version) -> Option<PathBuf> {
    // An explicit path wins and is never second-guessed by a fallback: if it
    // is wrong, better to say so than to silently test another binary.
    if let Some(path) = std::env::var_os(version.env_var()).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if reports_version(&path, version) {
            return Some(path);
        }
        eprintln!(
            "testkit: {}={} is not a working HAProxy {version}",
            version.env_var(),
            path.display()
        );
        return None;
    }
    let candidate = match version {
        // Debian's package; the version check matters because on a newer
        // Debian this path holds a different major version.
        Version::V26 => Some(PathBuf::from("/usr/sbin/haproxy")),
        Version::V30 => default_v30_path(),
    }?;
    reports_version(&candidate, version).then_some(candidate)
}

/// The HAProxy binary of `version`, if installed.
///
/// Looks at `$STICKAGG_HAPROXY_26` / `$STICKAGG_HAPROXY_30` first (set by
/// `scripts/test` from what `scripts/install-haproxy` printed), else at the
/// installer's default locations: `/usr/sbin/haproxy` for 2.6 and
/// `${HAPROXY_CACHE:-~/.cache/haproxy-builds}/3.0.11/haproxy` for 3.0. Each
/// candidate must answer `-v` with the right version. The answer is computed
/// once per test process.
pub fn haproxy_binary(version: Version) -> Option<PathBuf> {
    static FOUND: [OnceLock<Option<PathBuf>>; 2] = [OnceLock::new(), OnceLock::new()];
    FOUND[version.index()]
        .get_or_init(|| find_binary(version))
        .clone()
}

/// The HAProxy binary of `version` for a test that needs it.
///
/// Missing HAProxy must not turn into a green CI: when `$CI` is `true` this
/// panics (the test fails). On a developer machine it prints a notice to
/// stderr and returns `None`, and the test should return early:
///
/// ```no_run
/// # use testkit::{require_haproxy, Version};
/// let Some(_bin) = require_haproxy(Version::V30) else { return };
/// ```
pub fn require_haproxy(version: Version) -> Option<PathBuf> {
    if let Some(path) = haproxy_binary(version) {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "HAProxy {version} not found (CI=true, so this test fails instead of skipping): \
             run scripts/install-haproxy and set {} to the path it prints, or run scripts/test",
            version.env_var()
        );
    }
    eprintln!("skipping: HAProxy {version} not found, run scripts/install-haproxy");
    None
}

/// How to start one HAProxy process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyOpts {
    /// The local peer name, passed as `-L name`: it selects which `peer` /
    /// `server` line of the `peers` section is this process (HAProxy would use
    /// the hostname otherwise, which differs between machines).
    pub name: String,
    /// The configuration text. Placeholders replaced before writing it:
    /// `{sock}` → the stats socket path in the process's temporary directory,
    /// `{dir}` → that directory, `{name}` → `name`. If `{sock}` does not
    /// appear, a `global` section with `stats socket {sock} mode 600 level
    /// admin` is prepended (HAProxy merges several `global` sections), since
    /// [`Haproxy`] needs the socket to know the process is up.
    pub config: String,
}

impl HaproxyOpts {
    pub fn new(name: impl Into<String>, config: impl Into<String>) -> HaproxyOpts {
        HaproxyOpts {
            name: name.into(),
            config: config.into(),
        }
    }
}

/// A running HAProxy process owned by a test, killed when dropped.
///
/// Runs `haproxy -db -f <dir>/haproxy.cfg -L <name>` (`-db`: foreground, no
/// daemon, no master-worker, so the child we spawn is the process that
/// serves) in a fresh temporary directory holding the config, the stats socket
/// and `haproxy.log` (its stdout and stderr). `start` returns once the stats
/// socket answers, so the listeners are bound and the peers section is set up.
///
/// If the test panics while the process is alive, the tail of the log is
/// printed on drop, since HAProxy's alerts are usually the explanation.
pub struct Haproxy {
    version: Version,
    binary: PathBuf,
    name: String,
    dir: TempDir,
    cfg: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Haproxy {
    /// Starts HAProxy `version` with `opts`; panics (with the log) if the
    /// binary is missing or the process does not come up. Call
    /// [`require_haproxy`] first so the test skips rather than fails locally.
    pub fn start(version: Version, opts: &HaproxyOpts) -> Haproxy {
        Haproxy::try_start(version, opts)
            .unwrap_or_else(|e| panic!("HAProxy {version} failed to start: {e}"))
    }

    /// Like [`Haproxy::start`] but returns the failure (its message includes
    /// HAProxy's log), e.g. for tests that expect a config to be refused.
    pub fn try_start(version: Version, opts: &HaproxyOpts) -> io::Result<Haproxy> {
        let binary = haproxy_binary(version).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("HAProxy {version} not found; run scripts/install-haproxy (or use require_haproxy to skip)"),
            )
        })?;
        Haproxy::try_start_binary(version, binary, opts)
    }

    /// Starts a given binary (claimed to be `version`) instead of the one
    /// [`haproxy_binary`] finds.
    pub fn try_start_binary(
        version: Version,
        binary: PathBuf,
        opts: &HaproxyOpts,
    ) -> io::Result<Haproxy> {
        let dir = crate::temp_dir();
        let cfg = dir.path().join("haproxy.cfg");
        let sock = dir.path().join("stats.sock");
        let log = dir.path().join("haproxy.log");
        fs::write(
            &cfg,
            render_config(&opts.config, dir.path(), &sock, &opts.name),
        )?;
        let mut haproxy = Haproxy {
            version,
            binary,
            name: opts.name.clone(),
            dir,
            cfg,
            sock,
            log,
            child: None,
        };
        haproxy.spawn()?;
        Ok(haproxy)
    }

    /// Spawns the process and waits for its stats socket.
    fn spawn(&mut self) -> io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("-db")
            .arg("-f")
            .arg(&self.cfg)
            .arg("-L")
            .arg(&self.name)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", self.binary.display()),
                )
            })?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(io::Error::new(
                    e.kind(),
                    format!("{e}\n--- {} ---\n{}", self.log.display(), self.log()),
                ))
            }
        }
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let child = self.child.as_mut().expect("spawned");
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "haproxy exited during startup ({status})"
                )));
            }
            match stats_cmd(&self.sock, "show info") {
                Ok(info) if info.contains("Pid: ") => return Ok(()),
                Ok(_) | Err(_) if start.elapsed() < STARTUP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(info) => {
                    return Err(io::Error::other(format!(
                        "unexpected `show info` answer: {info:?}"
                    )));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "stats socket {} did not answer within {STARTUP_TIMEOUT:?}: {e}",
                            self.sock.display()
                        ),
                    ));
                }
            }
        }
    }

    /// Which version this is.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The local peer name (`-L`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stats socket path.
    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// The process's temporary directory (config, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration as written, placeholders replaced.
    pub fn config(&self) -> String {
        fs::read_to_string(&self.cfg).unwrap_or_default()
    }

    /// The pid of the running process. Panics if it was killed.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("HAProxy {} ({}) is not running", self.version, self.name))
    }

    /// True while the process runs (false after [`Haproxy::kill`] or a crash).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// One stats-socket command, e.g. `cmd("show peers")`; panics with the
    /// log if the socket does not answer.
    pub fn cmd(&self, cmd: &str) -> String {
        stats_cmd(&self.sock, cmd).unwrap_or_else(|e| {
            panic!(
                "HAProxy {} ({}): stats command {cmd:?} failed: {e}\n--- log ---\n{}",
                self.version,
                self.name,
                self.log()
            )
        })
    }

    /// The entries of `table` (`"mypeers/t"` for a table declared in the
    /// `peers mypeers` section). Panics if HAProxy does not know the table.
    pub fn show_table(&self, table: &str) -> Vec<TableEntry> {
        let out = self.cmd(&format!("show table {table}"));
        if !out.starts_with("# table:") {
            panic!(
                "HAProxy {} ({}): `show table {table}` answered {out:?}",
                self.version, self.name
            );
        }
        parse_show_table(&out)
    }

    /// The entry of `table` whose (unescaped) key is `key`, if any.
    pub fn table_entry(&self, table: &str, key: &str) -> Option<TableEntry> {
        self.show_table(table).into_iter().find(|e| e.key == key)
    }

    /// Everything HAProxy wrote to stdout/stderr so far (all runs, if restarted).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Kills the process (SIGKILL: no goodbye on its peer sessions, like a
    /// crash) and reaps it. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process if running and starts a new one with the same
    /// binary, config, name, socket and log (appended to). Its stick tables
    /// start empty, except what peers teach it.
    pub fn restart(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.sock);
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(log, "--- testkit: restart ---");
        }
        if let Err(e) = self.spawn() {
            panic!(
                "HAProxy {} ({}) failed to restart: {e}",
                self.version, self.name
            );
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- HAProxy {} ({}) log, last {} lines ---\n{}",
                self.version,
                self.name,
                tail.len(),
                tail.join("\n")
            );
        }
        self.kill();
    }
}

impl fmt::Debug for Haproxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Haproxy")
            .field("version", &self.version)
            .field("name", &self.name)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Replaces the placeholders of [`HaproxyOpts::config`].
fn render_config(config: &str, dir: &Path, sock: &Path, name: &str) -> String {
    let mut text = String::new();
    if !config.contains("{sock}") {
        text.push_str("global\n    stats socket {sock} mode 600 level admin\n\n");
    }
    text.push_str(config);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.replace("{sock}", &sock.display().to_string())
        .replace("{dir}", &dir.display().to_string())
        .replace("{name}", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let text = render_config(
            "global\n    stats socket {sock} mode 600 level admin\npeers p\n    server {name}\n    # {dir}",
            Path::new("/t/d"),
            Path::new("/t/d/stats.sock"),
            "hap1",
        );
        assert_eq!(
            text,
            "global\n    stats socket /t/d/stats.sock mode 600 level admin\npeers p\n    server hap1\n    # /t/d\n"
        );
    }

    #[test]
    fn adds_a_stats_socket_when_missing() {
        let text = render_config(
            "defaults\n    mode http\n",
            Path::new("/d"),
            Path::new("/d/s"),
            "x",
        );
        assert!(text.starts_with("global\n    stats socket /d/s mode 600 level admin\n\ndefaults"));
    }

    #[test]
    fn version_names() {
        assert_eq!(Version::V26.to_string(), "2.6");
        assert_eq!(Version::V30.env_var(), "STICKAGG_HAPROXY_30");
        assert_eq!(Version::ALL, [Version::V26, Version::V30]);
    }
}
