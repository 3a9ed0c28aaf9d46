//! The member's identity (member id, cluster id and how it joined), decided
//! once when its data directory is first used and kept in
//! `<data-dir>/member/identity`.
//!
//! etcd keeps these in its WAL metadata; like etcd, a restarted member uses
//! the recorded identity and ignores `--initial-cluster*` flags. A member that
//! joined with `--initial-cluster-state existing` learned its id from the
//! cluster, so it could not recompute it from flags anyway.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    /// True for a member of a new cluster's initial configuration: it takes
    /// part in bootstrapping (idempotent after the first time).
    pub initial: bool,
}

fn path(member_dir: &Path) -> PathBuf {
    member_dir.join("identity")
}

fn body(id: &Identity) -> String {
    format!("member_id={:x}\ncluster_id={:x}\ninitial={}\n", id.member_id, id.cluster_id, id.initial)
}

/// The recorded identity, if the data directory has one.
pub fn load(member_dir: &Path) -> anyhow::Result<Option<Identity>> {
    let p = path(member_dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let (content, crc_line) = text.rsplit_once("crc32=").with_context(|| format!("{} is damaged", p.display()))?;
    let crc = u32::from_str_radix(crc_line.trim(), 16).with_context(|| format!("{} is damaged", p.display()))?;
    if crc32fast::hash(content.as_bytes()) != crc {
        bail!("{} fails its checksum", p.display());
    }
    let mut member_id = None;
    let mut cluster_id = None;
    let mut initial = None;
    for line in content.lines() {
        match line.split_once('=') {
            Some(("member_id", v)) => member_id = u64::from_str_radix(v, 16).ok(),
            Some(("cluster_id", v)) => cluster_id = u64::from_str_radix(v, 16).ok(),
            Some(("initial", v)) => initial = v.parse().ok(),
            _ => {}
        }
    }
    match (member_id, cluster_id, initial) {
        (Some(member_id), Some(cluster_id), Some(initial)) => Ok(Some(Identity { member_id, cluster_id, initial })),
        _ => bail!("{} is damaged", p.display()),
    }
}

/// Records the identity durably (temporary file, fsync, rename, dir fsync).
pub fn store(member_dir: &Path, id: &Identity) -> anyhow::Result<()> {
    let content = body(id);
    let text = format!("{content}crc32={:08x}\n", crc32fast::hash(content.as_bytes()));
    let tmp = member_dir.join("identity.tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path(member_dir))?;
    fs::File::open(member_dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let id = Identity { member_id: 0x8e9e05c52164694d, cluster_id: 0xcdf818194e3a8c32, initial: true };
        store(dir.path(), &id).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(id));
        let p = path(dir.path());
        let text = fs::read_to_string(&p).unwrap().replace("initial=true", "initial=fals");
        fs::write(&p, text).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
