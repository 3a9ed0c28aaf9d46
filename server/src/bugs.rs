//! `CAIRN_BUGS`: the test-only bug switches (`cairn_storage::bugs`), read
//! once at start-up.
//!
//! Only a build with the `bug-switches` feature has them. A normal build
//! started with `CAIRN_BUGS` set refuses to start, so a run meant to show
//! that the harness catches a bug can never silently test a correct server.

use std::ffi::OsString;

use anyhow::bail;

/// The environment variable naming the switches to turn on (comma-separated).
pub const ENV: &str = "CAIRN_BUGS";

#[cfg(not(feature = "bug-switches"))]
pub fn init(value: Option<OsString>) -> anyhow::Result<()> {
    if let Some(value) = value {
        bail!(
            "{ENV}={value:?} is set, but this cairn was built without the bug-switches feature; \
             refusing to start (build with `--features bug-switches`, or unset {ENV})"
        );
    }
    Ok(())
}

/// Turns on the switches `value` names, each announced at WARN. An unknown
/// name is an error.
#[cfg(feature = "bug-switches")]
pub fn init(value: Option<OsString>) -> anyhow::Result<()> {
    use anyhow::Context;
    use cairn_storage::bugs;

    let Some(value) = value else { return Ok(()) };
    let Some(list) = value.to_str() else {
        bail!("{ENV}={value:?} is not valid UTF-8");
    };
    let switches = bugs::parse(list).with_context(|| format!("{ENV}={list:?}"))?;
    bugs::switch_on(&switches)?;
    for bug in switches {
        tracing::warn!(bug = bug.name(), "BUG SWITCH ON: {bug}: {}", bug.description());
    }
    Ok(())
}
