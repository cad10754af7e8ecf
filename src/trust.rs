//! Whom the cache directory trusts: ownership and mode checks in the spirit of ssh's
//! `StrictModes`.
//!
//! A cache directory is only as safe as the directories above it: whoever may rename an
//! ancestor may replace the whole cache with one of their own, serve forged results or plant
//! links that make pitch write elsewhere. So before pitch uses a cache directory it checks it
//! and every ancestor up to `/` with `lstat` (never `access(2)`, which root always passes):
//!
//! - each must be owned by the current user or by root;
//! - a directory writable by its group is fine when that group is its owner's private group
//!   (named like the owner, with no other member: the umask 002 of user private groups);
//! - an **ancestor** may be group- or world-writable only with the sticky bit (like `/tmp`),
//!   or, group-writable, when the user trusts the group ([`Policy::trust_group`]);
//! - the **cache directory and the directories below it** (pitch's own) may not be
//!   world-writable at all, and group-writable only when the group is trusted; a symlink
//!   where one of them should be is refused, naming it.
//!
//! The checks look at the path as it is now: a directory swapped between the check and its
//! use is not detected here (that needs `openat` with `O_NOFOLLOW` everywhere).

use std::ffi::CStr;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the cache directory trusts besides the current user and root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Trust the members of a directory's group: group-writable directories are accepted.
    /// Another user's directory is still refused.
    pub trust_group: bool,
}

/// Why a directory is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Untrusted {
    /// The directory (or link) at fault.
    pub path: PathBuf,
    /// What is wrong with it, with its owner and mode.
    pub reason: String,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path.display(), self.reason)
    }
}

/// User `uid`'s name and primary group, from the password database.
fn user(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the name is copied before `buf` goes.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some((name.to_string_lossy().into_owned(), pwd.pw_gid));
    }
}

/// Group `gid`'s name and listed members, from the group database.
fn group(gid: u32) -> Option<(String, Vec<String>)> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as for getpwuid_r; gr_mem is a NULL-terminated array of C strings in `buf`.
        let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || out.is_null() || grp.gr_name.is_null() {
            return None;
        }
        let name = unsafe { CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned();
        let mut members = Vec::new();
        let mut p = grp.gr_mem;
        while !p.is_null() && !unsafe { *p }.is_null() {
            members.push(unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned());
            p = unsafe { p.add(1) };
        }
        return Some((name, members));
    }
}

/// The name of user `uid`, or `uid N` when it has none.
pub(crate) fn user_name(uid: u32) -> String {
    match user(uid) {
        Some((name, _)) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Whether `gid` is the private group of user `uid` (the "user private groups" of Red Hat and
/// Debian, where the umask is often 002): the user's primary group, named like the user,
/// listing no other member. Its write permission lets nobody else in, as in the Debian patch
/// of ssh's StrictModes. (Another account with the same primary group is not looked for: it
/// would take reading the whole user database, which on a cluster may be a directory
/// service of thousands.)
fn is_private_group(gid: u32, uid: u32) -> bool {
    let (Some((user_name, primary)), Some((group_name, members))) = (user(uid), group(gid)) else {
        return false;
    };
    primary == gid && group_name == user_name && members.iter().all(|m| *m == user_name)
}

/// The effective user id of this process.
pub(crate) fn me() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// What the checks look at of one directory (from `lstat` here, or from `stat` run on the
/// login node of a remote cache, see [`check_remote`]).
struct Seen {
    uid: u32,
    mode: u32,
    link: bool,
    dir: bool,
    /// "owner NAME (uid N), mode 0755", for messages.
    described: String,
    /// " -> TARGET" of a link, when known.
    target: String,
}

/// Checks one directory's `lstat` metadata. `own` is true for the cache directory and the
/// directories below it, where the sticky bit excuses nothing.
fn check_meta(
    path: &Path,
    meta: &fs::Metadata,
    own: bool,
    policy: Policy,
) -> Result<(), Untrusted> {
    let link = meta.file_type().is_symlink();
    let seen = Seen {
        uid: meta.uid(),
        mode: meta.mode(),
        link,
        dir: meta.is_dir(),
        described: format!(
            "owner {}, mode {:04o}",
            user_name(meta.uid()),
            meta.mode() & 0o7777
        ),
        target: if link {
            fs::read_link(path)
                .map(|t| format!(" -> {}", t.display()))
                .unwrap_or_default()
        } else {
            String::new()
        },
    };
    check_seen(path, &seen, own, policy, me(), || {
        is_private_group(meta.gid(), meta.uid())
    })
}

/// The rules, for a directory `seen` as `me`; `private_group` tells whether its group is its
/// owner's private group (asked only for a group-writable one).
fn check_seen(
    path: &Path,
    seen: &Seen,
    own: bool,
    policy: Policy,
    me: u32,
    private_group: impl FnOnce() -> bool,
) -> Result<(), Untrusted> {
    let refuse = |reason: String| {
        Err(Untrusted {
            path: path.to_path_buf(),
            reason,
        })
    };
    let described = &seen.described;
    if seen.link {
        return refuse(format!(
            "is a symbolic link{} ({described}) where pitch expects a directory of its own: \
             pitch does not follow links inside the cache directory; remove it",
            seen.target
        ));
    }
    if !seen.dir {
        return refuse(format!("is not a directory ({described})"));
    }
    let uid = seen.uid;
    if uid != me && uid != 0 {
        return refuse(format!(
            "belongs to another user ({described}): that user could replace pitch's files and results; \
             use a directory of your own"
        ));
    }
    let mode = seen.mode;
    let sticky = mode & 0o1000 != 0 && !own;
    if mode & 0o002 != 0 && !sticky {
        return refuse(format!(
            "is writable by every user ({described}){}: anyone could replace pitch's files and \
             results; remove the write permission of others (chmod o-w)",
            if own { "" } else { " without the sticky bit" },
        ));
    }
    if mode & 0o020 != 0 && !sticky && !policy.trust_group && !private_group() {
        return refuse(format!(
            "is writable by its group ({described}){}: any member of the group could replace \
             pitch's files and results; remove the group's write permission (chmod g-w), or \
             trust the group explicitly with trust_group = true in the profile \
             (--trust-group, .trust_group(true))",
            if own { "" } else { " without the sticky bit" },
        ));
    }
    Ok(())
}

/// The shell script that shows a remote cache directory (`$1`) and its ancestors to
/// [`check_remote`]: the user (`id`), the directory's path with its links resolved (`pwd
/// -P`, as the local cache directory's is canonicalized), then one line for it and each
/// ancestor up to `/` from `stat` (GNU's `-c`, which does not follow a link).
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub(crate) const REMOTE_CHECK_SCRIPT: &str = r#"r=$(cd -P -- "$1" && pwd -P) || exit 1
printf '%s|%s|%s\n' "$(id -u)" "$(id -g)" "$(id -un)"
printf '%s\n' "$r"
d=$r
while :; do
  stat -c '%u|%g|%a|%F|%U|%G' -- "$d" || exit 1
  [ "$d" = / ] && break
  d=${d%/*}; [ -n "$d" ] || d=/
done"#;

/// Checks a remote cache directory `dir` and its ancestors by the same rules as a local one,
/// from the output of [`REMOTE_CHECK_SCRIPT`] run on the login node: a group-writable
/// directory is its owner's private group's when its group is the user's primary group and
/// named like the user (the group's member list is not looked at there).
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub(crate) fn check_remote(dir: &Path, output: &str, policy: Policy) -> Result<(), Untrusted> {
    let bad = |what: String| Untrusted {
        path: dir.to_path_buf(),
        reason: format!("could not be checked on the remote side: {what}"),
    };
    let mut lines = output.lines();
    let who: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    let [uid, gid, name] = who[..] else {
        return Err(bad(format!("unexpected output of id: {output:?}")));
    };
    let (Ok(me), Ok(my_gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        return Err(bad(format!("unexpected output of id: {output:?}")));
    };
    let resolved = Path::new(lines.next().unwrap_or_default());
    if !resolved.is_absolute() {
        return Err(bad(format!("unexpected output of pwd: {output:?}")));
    }
    for (i, d) in resolved.ancestors().enumerate() {
        let line = lines
            .next()
            .ok_or_else(|| bad(format!("no stat line for {}", d.display())))?;
        let f: Vec<&str> = line.splitn(6, '|').collect();
        let [u, g, mode, kind, owner, group] = f[..] else {
            return Err(bad(format!("unexpected output of stat: {line:?}")));
        };
        let (Ok(u), Ok(g), Ok(mode)) = (
            u.parse::<u32>(),
            g.parse::<u32>(),
            u32::from_str_radix(mode, 8),
        ) else {
            return Err(bad(format!("unexpected output of stat: {line:?}")));
        };
        let seen = Seen {
            uid: u,
            mode,
            link: kind == "symbolic link",
            dir: kind == "directory",
            described: format!("owner {owner} (uid {u}), mode {mode:04o}"),
            target: String::new(),
        };
        check_seen(d, &seen, i == 0, policy, me, || {
            u == me && g == my_gid && group == name
        })?;
    }
    Ok(())
}

/// Checks the metadata of one of pitch's own directories, opened as `path` (`fstat` of a
/// directory handle, see `store::Dir`), as [`check_own`] checks it by path.
pub(crate) fn check_own_meta(
    path: &Path,
    meta: &fs::Metadata,
    policy: Policy,
) -> Result<(), Untrusted> {
    check_meta(path, meta, true, policy)
}

/// Checks the directory `path` (one of pitch's own, below or at the cache root) with `lstat`:
/// a link, another user's directory or one others may write is refused.
pub(crate) fn check_own(path: &Path, policy: Policy) -> Result<(), Untrusted> {
    let meta = fs::symlink_metadata(path).map_err(|e| Untrusted {
        path: path.to_path_buf(),
        reason: format!("cannot be examined: {e}"),
    })?;
    check_meta(path, &meta, true, policy)
}

/// Checks the cache directory `root` (an absolute path without links, as `canonicalize`
/// gives) and every ancestor up to `/`.
pub(crate) fn check_root(root: &Path, policy: Policy) -> Result<(), Untrusted> {
    check_own(root, policy)?;
    for dir in root.ancestors().skip(1) {
        let meta = fs::symlink_metadata(dir).map_err(|e| Untrusted {
            path: dir.to_path_buf(),
            reason: format!("cannot be examined: {e}"),
        })?;
        check_meta(dir, &meta, false, policy)?;
    }
    Ok(())
}

/// Checks the directories above `path` that exist already (the nearest one and every
/// ancestor of it), before pitch creates anything below them.
pub(crate) fn check_existing_parents(path: &Path, policy: Policy) -> Result<(), Untrusted> {
    let mut parent = path.parent();
    while let Some(dir) = parent {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if dir.symlink_metadata().is_ok() {
            let dir = fs::canonicalize(dir).map_err(|e| Untrusted {
                path: dir.to_path_buf(),
                reason: format!("cannot be resolved: {e}"),
            })?;
            for d in dir.ancestors() {
                let meta = fs::symlink_metadata(d).map_err(|e| Untrusted {
                    path: d.to_path_buf(),
                    reason: format!("cannot be examined: {e}"),
                })?;
                check_meta(d, &meta, false, policy)?;
            }
            return Ok(());
        }
        parent = dir.parent();
    }
    Ok(())
}

/// Creates the directory `path` 0700 unless it exists; its missing parents are created with
/// the umask's mode (they are not pitch's: a parent like `/scratch/me` made private would
/// lock others out of what they may use).
pub(crate) fn create_private(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A group that is not the current user's private group, for the directories of a test,
    /// or `None` (the test is skipped) when this user cannot give a directory another group.
    fn shared_group() -> Option<u32> {
        if me() == 0 {
            // daemon (1): a system group, not root's private group.
            Some(1)
        } else {
            eprintln!("skipped: only root can give a test directory a shared group");
            None
        }
    }

    #[test]
    fn a_group_writable_ancestor_is_refused_unless_the_group_is_trusted() {
        let Some(gid) = shared_group() else {
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let project = d.path().join("project");
        let cache = project.join("cache");
        fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::chown(&project, None, Some(gid)).unwrap();
        std::os::unix::fs::chown(&cache, None, Some(gid)).unwrap();
        chmod(&project, 0o770);
        chmod(&cache, 0o700);
        let root = fs::canonicalize(&cache).unwrap();
        let err = check_root(&root, Policy::default()).unwrap_err();
        assert_eq!(err.path, fs::canonicalize(&project).unwrap());
        let text = err.to_string();
        assert!(
            text.contains("writable by its group") && text.contains("mode 0770"),
            "{text}"
        );
        assert!(text.contains("trust_group"), "{text}");
        check_root(&root, Policy { trust_group: true }).unwrap();
        // The sticky bit excuses an ancestor (like /tmp), never the cache directory.
        chmod(&project, 0o1777);
        check_root(&root, Policy::default()).unwrap();
        chmod(&cache, 0o1777);
        let err = check_root(&root, Policy { trust_group: true }).unwrap_err();
        assert_eq!(err.path, root);
        assert!(err.reason.contains("writable by every user"), "{err}");
        chmod(&cache, 0o770);
        assert!(check_root(&root, Policy::default()).is_err());
        check_root(&root, Policy { trust_group: true }).unwrap();
    }

    #[test]
    fn a_private_group_may_write() {
        // The directories of a user with umask 002 are group-writable by the user's own group.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("home");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o775);
        let meta = fs::symlink_metadata(&dir).unwrap();
        let private = is_private_group(meta.gid(), me());
        assert_eq!(
            check_meta(&dir, &meta, false, Policy::default()).is_ok(),
            private
        );
        if me() == 0 {
            // root's group lists no member on a stock system: its private group.
            assert!(is_private_group(0, 0));
            assert!(!is_private_group(1, 0), "daemon is not root's");
        }
    }

    #[test]
    fn a_world_writable_ancestor_without_sticky_bit_is_refused_even_for_a_trusted_group() {
        let d = tempfile::tempdir().unwrap();
        let open = d.path().join("open");
        let cache = open.join("cache");
        fs::create_dir_all(&cache).unwrap();
        chmod(&open, 0o777);
        let root = fs::canonicalize(&cache).unwrap();
        let err = check_root(&root, Policy { trust_group: true }).unwrap_err();
        assert!(err.reason.contains("every user"), "{err}");
        assert!(err.reason.contains("mode 0777"), "{err}");
    }

    #[test]
    fn a_link_where_a_directory_should_be_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        let link = d.path().join("ab");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = check_own(&link, Policy { trust_group: true }).unwrap_err();
        assert_eq!(err.path, link);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(err.to_string().contains("elsewhere"), "{err}");
        check_own(&target, Policy::default()).unwrap();
    }

    #[test]
    fn a_remote_cache_is_checked_by_the_same_rules_from_what_stat_printed() {
        let dir = Path::new("/scratch/me/cache");
        let out = |lines: &[&str]| {
            format!(
                "1000|1000|me\n/gpfs/scratch/me/cache\n{}\n",
                lines.join("\n")
            )
        };
        let good = [
            "1000|1000|700|directory|me|me",
            "1000|1000|775|directory|me|me",
            "0|0|1777|directory|root|root",
            "0|0|755|directory|root|root",
            "0|0|755|directory|root|root",
        ];
        check_remote(dir, &out(&good), Policy::default()).unwrap();
        // Another user's folder above it (the path with its links resolved is named).
        let mut theirs = good;
        theirs[1] = "1001|1001|755|directory|eve|eve";
        let err = check_remote(dir, &out(&theirs), Policy::default()).unwrap_err();
        assert_eq!(err.path, Path::new("/gpfs/scratch/me"));
        assert!(
            err.reason.contains("another user") && err.reason.contains("eve (uid 1001)"),
            "{err}"
        );
        // A group-writable folder of a shared group: refused unless trusted.
        let mut shared = good;
        shared[1] = "1000|500|775|directory|me|project";
        let err = check_remote(dir, &out(&shared), Policy::default()).unwrap_err();
        assert!(err.reason.contains("writable by its group"), "{err}");
        check_remote(dir, &out(&shared), Policy { trust_group: true }).unwrap();
        // World-writable without the sticky bit, a link, and output that does not read.
        let mut open = good;
        open[3] = "0|0|777|directory|root|root";
        assert!(check_remote(dir, &out(&open), Policy { trust_group: true }).is_err());
        let mut link = good;
        link[0] = "1000|1000|777|symbolic link|me|me";
        let err = check_remote(dir, &out(&link), Policy::default()).unwrap_err();
        assert!(err.reason.contains("symbolic link"), "{err}");
        let err = check_remote(dir, &out(&good[..2]), Policy::default()).unwrap_err();
        assert!(err.reason.contains("could not be checked"), "{err}");
        assert!(check_remote(dir, "garbage", Policy::default()).is_err());
    }

    #[test]
    fn the_remote_check_script_reads_this_machine_as_the_checks_expect() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        create_private(&cache).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", REMOTE_CHECK_SCRIPT, "sh", cache.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let root = fs::canonicalize(&cache).unwrap();
        assert_eq!(
            check_remote(&cache, &text, Policy::default()).is_ok(),
            check_root(&root, Policy::default()).is_ok(),
            "{text}"
        );
        chmod(&cache, 0o777);
        let out = std::process::Command::new("sh")
            .args(["-c", REMOTE_CHECK_SCRIPT, "sh", cache.to_str().unwrap()])
            .output()
            .unwrap();
        let err = check_remote(
            &cache,
            &String::from_utf8_lossy(&out.stdout),
            Policy::default(),
        )
        .unwrap_err();
        assert_eq!(err.path, root);
    }

    #[test]
    fn created_parents_get_the_umask_mode_and_the_directory_0700() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("scratch/me/cache");
        // The test cannot change the process umask safely (other tests run in threads): it
        // compares with a directory created the default way.
        let reference = d.path().join("reference");
        fs::create_dir(&reference).unwrap();
        let umask_mode = fs::metadata(&reference).unwrap().permissions().mode() & 0o777;
        create_private(&dir).unwrap();
        create_private(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&d.path().join("scratch")), umask_mode);
        assert_eq!(mode(&d.path().join("scratch/me")), umask_mode);
    }
}
