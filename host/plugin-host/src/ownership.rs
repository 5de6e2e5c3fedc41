//! Whoever can write a plugin file, the plugins directory or the policy
//! decides what code converts every tenant's traffic. The host loads from
//! them only when they are owned by the user it runs as (or root) and not
//! writable by others, as `ssh` treats its keys: otherwise any local user
//! could drop a converter in, or re-route a tenant to one. Group write is
//! refused too unless the group is the process's own (with a `umask 002`
//! and per-user groups, every file a user creates is group-writable by
//! that user's own group, which gives no one else anything).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Why `path` cannot be trusted, or `Ok` when it can (or does not exist:
/// absence is the caller's business).
pub(crate) fn check(path: &Path) -> Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let euid = rustix::process::geteuid().as_raw();
    let egid = rustix::process::getegid().as_raw();
    verdict(meta.uid(), meta.gid(), meta.mode(), (euid, egid))
}

fn verdict(owner: u32, group: u32, mode: u32, (euid, egid): (u32, u32)) -> Result<(), String> {
    if owner != euid && owner != 0 {
        return Err(format!(
            "owned by uid {owner}, not by this process's user (uid {euid}) or root: \
             that user could replace what is loaded"
        ));
    }
    let group_write = mode & 0o020 != 0 && group != egid;
    if mode & 0o002 != 0 || group_write {
        return Err(format!(
            "writable by {} (mode {:o}): anyone in it could replace what is loaded; \
             run chmod go-w on it",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_write_bits_decide() {
        let me = (1000, 1000);
        assert!(verdict(1000, 1000, 0o100644, me).is_ok());
        assert!(verdict(0, 0, 0o40755, me).is_ok(), "root-owned is fine");
        assert!(verdict(1000, 1000, 0o100600, me).is_ok());
        assert!(
            verdict(1000, 1000, 0o100664, me).is_ok(),
            "group-writable by our own group (umask 002)"
        );
        let group = verdict(1000, 50, 0o100664, me).expect_err("group-writable");
        assert!(
            group.contains("its group") && group.contains("chmod go-w"),
            "{group}"
        );
        let world = verdict(1000, 1000, 0o40777, me).expect_err("world-writable");
        assert!(world.contains("every user"), "{world}");
        let other = verdict(1001, 1000, 0o100644, me).expect_err("another owner");
        assert!(other.contains("uid 1001"), "{other}");
    }

    #[test]
    fn a_missing_path_is_left_to_the_caller() {
        assert!(check(Path::new("/nonexistent/hermes/policy.toml")).is_ok());
    }
}
