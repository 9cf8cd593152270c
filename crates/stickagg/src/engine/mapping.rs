//! Which announced tables are inputs, and what their outputs are called
//! (semantics.md "Table mapping").
//!
//! The mapping is a pure function of the section's `from … to …` and
//! `forward` lines, so the engine never needs to be told table names in
//! advance: it learns them from the peers' DEFINEs.

use super::EngineConfig;

/// Whether `name` ends in one of the section's output suffixes (the `to`
/// suffix or a `forward` suffix). Such tables are never inputs: updates for
/// them are results (ours, or an upper level's) coming back, and summing them
/// again would feed the totals into themselves.
pub fn is_output_name(cfg: &EngineConfig, name: &str) -> bool {
    is_our_output(cfg, name)
        || cfg
            .forward
            .iter()
            .any(|s| !s.is_empty() && name.ends_with(s.as_str()))
}

/// Whether `name` is one of this section's outputs (ends in `to`).
pub(super) fn is_our_output(cfg: &EngineConfig, name: &str) -> bool {
    !cfg.to.is_empty() && name.ends_with(cfg.to.as_str())
}

/// Whether `name` is a forwarded table (ends in a `forward` suffix, with
/// something before it): relayed from `up` peers, never an input.
pub(super) fn is_forwarded(cfg: &EngineConfig, name: &str) -> bool {
    cfg.forward
        .iter()
        .any(|s| !s.is_empty() && name.len() > s.len() && name.ends_with(s.as_str()))
}

/// The forwarded tables that correspond to our output `output`: its stem
/// with each `forward` suffix (`/t.intermediate` → `/t.agg`). These are what
/// an upper level computes from what we send it, so they are what we expect
/// to receive from it (and relay down) before it sent any value.
pub(super) fn forwarded_names(cfg: &EngineConfig, output: &str) -> Vec<String> {
    let Some(stem) = output
        .strip_suffix(cfg.to.as_str())
        .filter(|s| !cfg.to.is_empty() && !s.is_empty() && *s != "/")
    else {
        return Vec::new();
    };
    cfg.forward
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| format!("{stem}{f}"))
        .collect()
}

/// The output table fed by input `input`, or `None` when `input` is not an
/// input of this section.
///
/// - `from any`: every name that is not an output name; output = input + `to`.
/// - `from <sfx>`: only names ending in `sfx` (with something before it);
///   output = the name with `sfx` replaced by `to`.
///
/// Names keep their leading `/` (`/request_rates` → `/request_rates.agg`).
/// The mapping is injective, so an output name identifies its input.
pub fn output_name(cfg: &EngineConfig, input: &str) -> Option<String> {
    if cfg.to.is_empty() || is_output_name(cfg, input) {
        return None;
    }
    match cfg.from.as_deref() {
        None => Some(format!("{input}{}", cfg.to)),
        Some(sfx) => {
            if sfx.is_empty() {
                return None;
            }
            let base = input.strip_suffix(sfx)?;
            // `/.nonagg` or `.nonagg` alone would produce a nameless output.
            if base.is_empty() || base == "/" {
                return None;
            }
            Some(format!("{base}{}", cfg.to))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(from: Option<&str>, to: &str, forward: &[&str]) -> EngineConfig {
        EngineConfig {
            from: from.map(str::to_string),
            to: to.to_string(),
            forward: forward.iter().map(|s| s.to_string()).collect(),
            ..EngineConfig::default()
        }
    }

    #[test]
    fn from_any() {
        let c = cfg(None, ".agg", &[]);
        assert_eq!(
            output_name(&c, "/request_rates").as_deref(),
            Some("/request_rates.agg")
        );
        assert_eq!(
            output_name(&c, "be_static").as_deref(),
            Some("be_static.agg")
        );
        assert_eq!(output_name(&c, "/request_rates.agg"), None);
        assert!(is_output_name(&c, "/request_rates.agg"));
        assert!(!is_output_name(&c, "/request_rates"));
        // `.nonagg` is an ordinary input name here.
        assert_eq!(
            output_name(&c, "/t.nonagg").as_deref(),
            Some("/t.nonagg.agg")
        );
    }

    #[test]
    fn from_suffix() {
        let c = cfg(Some(".nonagg"), ".agg", &[]);
        assert_eq!(
            output_name(&c, "/request_rates.nonagg").as_deref(),
            Some("/request_rates.agg")
        );
        assert_eq!(output_name(&c, "/request_rates"), None);
        assert_eq!(output_name(&c, "/request_rates.agg"), None);
        assert_eq!(output_name(&c, "/.nonagg"), None);
        assert_eq!(output_name(&c, ".nonagg"), None);
        assert!(is_output_name(&c, "/request_rates.agg"));
        assert!(!is_output_name(&c, "/request_rates.nonagg"));
    }

    #[test]
    fn forward_suffixes_are_never_inputs() {
        let c = cfg(None, ".intermediate", &[".agg"]);
        assert!(is_output_name(&c, "/t.agg"));
        assert!(is_output_name(&c, "/t.intermediate"));
        assert!(!is_our_output(&c, "/t.agg"));
        assert_eq!(output_name(&c, "/t.agg"), None);
        assert_eq!(output_name(&c, "/t").as_deref(), Some("/t.intermediate"));
    }

    #[test]
    fn forwarded_names_follow_the_output_stem() {
        let c = cfg(None, ".intermediate", &[".agg"]);
        assert!(is_forwarded(&c, "/t.agg"));
        assert!(!is_forwarded(&c, ".agg"));
        assert!(!is_forwarded(&c, "/t.intermediate"));
        assert_eq!(forwarded_names(&c, "/t.intermediate"), ["/t.agg"]);
        assert_eq!(forwarded_names(&c, "be.intermediate"), ["be.agg"]);
        assert!(forwarded_names(&c, "/t.other").is_empty());
        assert!(forwarded_names(&c, "/.intermediate").is_empty());
        // A middle level of a chain: `from .intermediate to .regional`.
        let c = cfg(Some(".intermediate"), ".regional", &[".agg", ".x"]);
        assert_eq!(forwarded_names(&c, "/t.regional"), ["/t.agg", "/t.x"]);
        assert!(forwarded_names(&cfg(None, ".agg", &[]), "/t.agg").is_empty());
    }

    #[test]
    fn empty_suffixes_map_nothing() {
        assert_eq!(output_name(&cfg(None, "", &[]), "/t"), None);
        assert_eq!(output_name(&cfg(Some(""), ".agg", &[]), "/t"), None);
        // An empty forward suffix must not make everything an output.
        assert!(!is_output_name(&cfg(None, ".agg", &[""]), "/t"));
    }
}
