//! `stickagg --check` and `-v`, run as the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stickagg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stickagg"))
        .args(args)
        .output()
        .expect("run stickagg")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `shared/` sits beside the repository, here and in CI.
fn seed_configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seed/configs")
}

/// Writes `content` to a fresh file of the test's temporary directory.
fn write_cfg(name: &str, content: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_check");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn every_seed_gpe_config_is_valid() {
    let dir = seed_configs();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("gpe-") && name.ends_with(".cfg")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "too few gpe-*.cfg in {}: {files:?}",
        dir.display()
    );
    for file in &files {
        let out = stickagg(&["--check", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{} refused ({:?}):\n{}",
            file.display(),
            out.status,
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "Configuration file is valid\n");
    }
}

#[test]
fn haproxy_config_is_refused() {
    // A load balancer's configuration given by mistake.
    let file = seed_configs().join("lb-basic.cfg");
    let out = stickagg(&["--check", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let where_ = format!(
        "{}:6: 'peers' sections belong to HAProxy's configuration",
        file.display()
    );
    assert!(err.contains(&where_), "{err}");
}

#[test]
fn broken_config_reports_every_error_with_its_line() {
    let path = write_cfg(
        "broken.cfg",
        "global\n\
         \x20   stats socket /tmp/gpe.sock\n\
         \x20   bnd 0.0.0.0:10000\n\
         \n\
         aggregations data\n\
         \x20   from any to .agg\n\
         \x20   forward .agg\n\
         \x20   peer gpe 0.0.0.0:10000 local\n\
         \x20   peer enterprise1 192.168.50.41:10000 up down\n",
    );
    let out = stickagg(&["--check", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    let p = path.display();
    for expected in [
        format!("{p}:3: unknown directive 'bnd' in the global section (did you mean 'bind'?)"),
        format!("{p}:7: forward suffix '.agg' equal to the to suffix"),
        format!("{p}:9: peer 'enterprise1' is both 'up' and 'down'"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.ends_with("Configuration file is invalid (3 errors)\n"),
        "{err}"
    );
}

#[test]
fn missing_section_and_missing_file() {
    let path = write_cfg("global-only.cfg", "global\n    maxconn 10\n");
    let out = stickagg(&["--check", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no aggregations section"));

    let out = stickagg(&["--check", "-f", "/nonexistent/stickagg.cfg"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr)
        .starts_with("/nonexistent/stickagg.cfg: cannot read the configuration file"));
}

#[test]
fn a_broken_config_stops_the_daemon_too() {
    let path = write_cfg(
        "broken-run.cfg",
        "aggregations data\n    from any to .agg\n",
    );
    let out = stickagg(&["-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: section 'data' has no listening address",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn version() {
    for flag in ["-v", "--version"] {
        let out = stickagg(&[flag]);
        assert!(out.status.success());
        assert_eq!(
            text(&out.stdout),
            format!("stickagg {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn help_documents_every_flag() {
    let out = stickagg(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "-f <FILE>",
        "-d",
        "--check",
        "--log-format",
        "-l <[A:|W:]FILE>",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn the_example_etc_configuration_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/etc/stickagg/stickagg.cfg");
    let out = stickagg(&["--check", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
