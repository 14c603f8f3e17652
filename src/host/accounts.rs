//! The accounts a `snapfs run` backs up, chosen by `[accounts]` of the
//! host configuration.
//!
//! Two modes:
//!
//! - **uid range** (no `names`): every user of the user database with a uid
//!   in `uid_min..=uid_max` whose files folder exists. Users outside the
//!   range (root, daemons, `nobody`) are not mentioned; users inside it
//!   without a folder are reported as skipped, because on a hosting server
//!   that is usually an account half created or half removed, which the
//!   operator wants to hear about.
//! - **names** (`names = [...]`): exactly these, whatever their uid. A name
//!   that is no user but whose files folder exists is backed up all the
//!   same, with no uid or gid ([`Account::user`] is `None`) — a site folder
//!   kept after its user was moved to LDAP, say — and the report says so;
//!   a name that is neither is skipped as [`Skip::Unknown`].
//!
//! In both modes `exclude` wins, and a name that cannot be a single path
//! component (empty, `.`, `..`, a `/`, not UTF-8) is never put into the
//! files path: `..` would make `/home/{account}` back up all of `/`.
//!
//! **"Exists"** means: the *files path of the configuration* (`[files]
//! path`, `{account}` replaced) is a folder, looked at without following a
//! final symlink. Not the passwd home: the files path is what the backup
//! reads, and the two differ on platforms that keep sites under
//! `/var/www/{account}` with homes elsewhere. A link there is skipped
//! rather than followed (a tenant who can place one would choose what
//! root backs up); the backup opens the path again through descriptors
//! and refuses a link on the way, so this look is only the selection, not
//! the safety.
//!
//! **The user database** is read through libc (`getpwent_r`, `getpwnam_r`),
//! so users from NSS (LDAP, sssd, a database) count, not only
//! `/etc/passwd`. sssd lists no users unless `enumerate = true` in its
//! domain: without it, the uid range sees only local users, and `names` —
//! looked up one by one, which sssd always answers — is the mode to use.
//! An error of the database (an LDAP server gone mid-listing) fails the
//! selection: a run that backed up half the accounts in silence would be
//! worse than one that failed loudly.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::host::config::{for_account, HostConfig};

/// A user of the user database (one passwd entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The home of the passwd entry: informative; the backup reads
    /// [`Account::files`].
    pub home: PathBuf,
}

/// An account the run backs up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The name its snapshots are grouped by (`--account`).
    pub name: String,
    /// Its files: `[files] path` with `{account}` replaced; a folder when
    /// selected.
    pub files: PathBuf,
    /// Its user; `None` for a name of `[accounts] names` that is no user
    /// but has a files folder.
    pub user: Option<User>,
}

/// Why an account is not backed up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Listed in `[accounts] exclude`.
    Excluded,
    /// Its files path is not a folder: missing, a file, or a symlink.
    NoFolder(PathBuf),
    /// A name of `[accounts] names` that is no user and has no files folder.
    Unknown(PathBuf),
    /// A name that cannot be one path component; shown lossily.
    BadName,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub why: Skip,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.why {
            Skip::Excluded => write!(f, "{name}: excluded by [accounts] exclude"),
            Skip::NoFolder(path) => write!(f, "{name}: {} is not a folder", path.display()),
            Skip::Unknown(path) => write!(
                f,
                "{name}: no such user, and {} is not a folder",
                path.display()
            ),
            Skip::BadName => write!(f, "{name:?}: not usable as a folder name"),
        }
    }
}

/// What a run backs up, and what it leaves out and why; both sorted by
/// name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub accounts: Vec<Account>,
    pub skipped: Vec<Skipped>,
    /// Why any other name is not selected, for [`Selection::restrict`]'s
    /// message: users outside the uid range (with their uid), or the
    /// configured names (names mode).
    outside: Outside,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Outside {
    #[default]
    Nothing,
    UidRange {
        min: u32,
        max: u32,
        users: BTreeMap<String, u32>,
    },
    NotListed,
}

impl Selection {
    /// Only the accounts named (`snapfs run --account NAME`); no names: all
    /// of them. A name that the configuration does not select is an error
    /// naming every such name and why, so that a typo never becomes an
    /// empty, successful run.
    pub fn restrict(mut self, names: &[String]) -> Result<Selection> {
        if names.is_empty() {
            return Ok(self);
        }
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut refused = Vec::new();
        for &name in &wanted {
            if self.accounts.iter().any(|a| a.name == name) {
                continue;
            }
            let why = if let Some(skipped) = self.skipped.iter().find(|s| s.name == name) {
                skipped.to_string()
            } else {
                match &self.outside {
                    Outside::UidRange { min, max, users } => match users.get(name) {
                        Some(uid) => format!(
                            "{name}: uid {uid} is outside [accounts] uid_min..=uid_max \
                             ({min}..={max})"
                        ),
                        None => format!("{name}: no such user"),
                    },
                    Outside::NotListed => format!("{name}: not in [accounts] names"),
                    Outside::Nothing => format!("{name}: not selected"),
                }
            };
            refused.push(why);
        }
        if !refused.is_empty() {
            return Err(Error::Invalid(format!(
                "not an account this configuration backs up: {}",
                refused.join("; ")
            )));
        }
        self.accounts.retain(|a| wanted.contains(a.name.as_str()));
        self.skipped.retain(|s| wanted.contains(s.name.as_str()));
        Ok(self)
    }
}

/// The accounts `cfg` selects on this machine.
pub fn select(cfg: &HostConfig) -> Result<Selection> {
    select_with(cfg, &SystemUsers, |path| {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
    })
}

/// A user database: the system's, or a list in tests.
pub trait UserDb {
    /// Every user, in the database's order (duplicates possible: NSS
    /// returns a name once per source that has it).
    fn all(&self) -> Result<Vec<User>>;
    /// The user of this name, as `getpwnam` finds it.
    fn by_name(&self, name: &str) -> Result<Option<User>>;
}

/// [`select`] with the user database and the folder test given: the seam
/// the unit tests use, so they do not depend on this machine's users.
pub fn select_with(
    cfg: &HostConfig,
    db: &impl UserDb,
    is_folder: impl Fn(&Path) -> bool,
) -> Result<Selection> {
    let accounts = &cfg.accounts;
    let excluded: BTreeSet<&str> = accounts.exclude.iter().map(String::as_str).collect();
    let mut selection = Selection::default();
    // Each name once: the first user of a name wins, as in getpwnam.
    let mut candidates: BTreeMap<String, Option<User>> = BTreeMap::new();
    match &accounts.names {
        Some(names) => {
            for name in names {
                if !candidates.contains_key(name) {
                    let user = if usable(name) {
                        db.by_name(name)?
                    } else {
                        None
                    };
                    candidates.insert(name.clone(), user);
                }
            }
            selection.outside = Outside::NotListed;
        }
        None => {
            let (min, max) = (accounts.uid_min, accounts.uid_max);
            let mut outside = BTreeMap::new();
            for user in db.all()? {
                if (min..=max).contains(&user.uid) {
                    candidates.entry(user.name.clone()).or_insert(Some(user));
                } else {
                    outside.entry(user.name).or_insert(user.uid);
                }
            }
            selection.outside = Outside::UidRange {
                min,
                max,
                users: outside,
            };
        }
    }
    // BTreeMap: sorted by name, both lists.
    for (name, user) in candidates {
        let skip = |why| Skipped {
            name: name.clone(),
            why,
        };
        if excluded.contains(name.as_str()) {
            selection.skipped.push(skip(Skip::Excluded));
            continue;
        }
        if !usable(&name) {
            selection.skipped.push(skip(Skip::BadName));
            continue;
        }
        let files = for_account(&cfg.files.path, &name);
        if !is_folder(&files) {
            let why = match user {
                Some(_) => Skip::NoFolder(files),
                None => Skip::Unknown(files),
            };
            selection.skipped.push(skip(why));
            continue;
        }
        selection.accounts.push(Account { name, files, user });
    }
    Ok(selection)
}

/// Whether `name` can be put into a path template as one component.
/// Names not in UTF-8 never get here: they arrive lossily converted, with
/// U+FFFD, which [`SystemUsers`] maps to a name this refuses.
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0', char::REPLACEMENT_CHARACTER])
}

/// The system's user database through libc, NSS included.
pub struct SystemUsers;

/// `setpwent`/`getpwent_r`/`endpwent` share one cursor per process: two
/// threads listing at once would each see part of the list.
static PWENT: Mutex<()> = Mutex::new(());

impl UserDb for SystemUsers {
    fn all(&self) -> Result<Vec<User>> {
        let _guard = PWENT.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the cursor is process-wide and guarded by PWENT.
        unsafe { libc::setpwent() };
        let mut users = Vec::new();
        let mut buf = vec![0 as libc::c_char; 4096];
        let result = loop {
            // SAFETY: `pwd` and `buf` outlive the call; `result` is set to
            // `&mut pwd` or null.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut result = std::ptr::null_mut();
            let rc =
                unsafe { libc::getpwent_r(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
            match rc {
                // glibc rewinds to the same entry on ERANGE: retry it
                // with room for it (a user with thousands of groups'
                // worth of gecos is rare, but LDAP has them).
                libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
                0 if !result.is_null() => users.push(user_from(&pwd)),
                // The end of the list: ENOENT, or 0 with no entry.
                0 | libc::ENOENT => break Ok(users),
                rc => {
                    break Err(Error::io(
                        "the user database (getpwent)",
                        std::io::Error::from_raw_os_error(rc),
                    ))
                }
            }
        };
        // SAFETY: as above.
        unsafe { libc::endpwent() };
        result
    }

    fn by_name(&self, name: &str) -> Result<Option<User>> {
        lookup(name)
    }
}

/// The user named `name`, from the user database (NSS included); `None`
/// when there is none.
pub fn lookup(name: &str) -> Result<Option<User>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer outlives the call; getpwnam_r is reentrant.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match rc {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            0 if !result.is_null() => return Ok(Some(user_from(&pwd))),
            // "Not found" is 0 with no entry, but some NSS modules say
            // ENOENT or ESRCH (getpwnam_r(3)).
            0 | libc::ENOENT | libc::ESRCH => return Ok(None),
            rc => {
                return Err(Error::io(
                    format!("the user database (getpwnam {name})"),
                    std::io::Error::from_raw_os_error(rc),
                ))
            }
        }
    }
}

fn user_from(pwd: &libc::passwd) -> User {
    // SAFETY: a filled passwd entry's strings are NUL-terminated and live
    // in the buffer the caller still holds.
    let (name, dir) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
    User {
        // Lossy: a name that is not UTF-8 gets U+FFFD, and `usable`
        // refuses it rather than guess its folder.
        name: name.to_string_lossy().into_owned(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: PathBuf::from(OsStr::from_bytes(dir.to_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u32) -> User {
        User {
            name: name.into(),
            uid,
            gid: uid,
            home: PathBuf::from(format!("/home/{name}")),
        }
    }

    struct Users(Vec<User>);

    impl UserDb for Users {
        fn all(&self) -> Result<Vec<User>> {
            Ok(self.0.clone())
        }
        fn by_name(&self, name: &str) -> Result<Option<User>> {
            Ok(self.0.iter().find(|u| u.name == name).cloned())
        }
    }

    fn config(accounts: &str) -> HostConfig {
        HostConfig::parse(&format!(
            "repository = \"/r\"\n[accounts]\n{accounts}\n[files]\npath = \"/srv/{{account}}/www\"\n"
        ))
        .unwrap()
    }

    fn host() -> Users {
        Users(vec![
            user("root", 0),
            user("www-data", 33),
            user("dave", 1003),
            user("alice", 1000),
            user("carol", 1002),
            user("bob", 1001),
            user("nobody", 65534),
            user("max", 59999),
            user("over", 60000),
        ])
    }

    /// Every files folder exists except carol's.
    fn folders(path: &Path) -> bool {
        path != Path::new("/srv/carol/www")
    }

    fn names(selection: &Selection) -> Vec<&str> {
        selection.accounts.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn the_uid_range_selects_users_inside_it_sorted_by_name() {
        let s = select_with(&config(""), &host(), folders).unwrap();
        assert_eq!(names(&s), ["alice", "bob", "dave", "max"]);
        let alice = &s.accounts[0];
        assert_eq!(alice.files, Path::new("/srv/alice/www"));
        assert_eq!(alice.user.as_ref().unwrap().uid, 1000);
        // Users outside the range are not reported, carol (in it) is.
        assert_eq!(
            s.skipped,
            [Skipped {
                name: "carol".into(),
                why: Skip::NoFolder("/srv/carol/www".into())
            }]
        );
        let s = select_with(&config("uid_min = 1001\nuid_max = 1002"), &host(), |_| true).unwrap();
        assert_eq!(names(&s), ["bob", "carol"]);
    }

    #[test]
    fn exclude_wins_and_is_reported() {
        let s = select_with(&config("exclude = [\"bob\", \"root\"]"), &host(), folders).unwrap();
        assert_eq!(names(&s), ["alice", "dave", "max"]);
        // root is outside the range anyway: not mentioned.
        let skipped: Vec<String> = s.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            [
                "bob: excluded by [accounts] exclude",
                "carol: /srv/carol/www is not a folder"
            ]
        );
    }

    #[test]
    fn names_are_exactly_those_listed_whatever_their_uid() {
        let cfg =
            config("names = [\"www-data\", \"bob\", \"ghost\", \"nofolder\", \"bob\", \"carol\"]");
        let is_folder = |p: &Path| p != Path::new("/srv/nofolder/www") && folders(p);
        let s = select_with(&cfg, &host(), is_folder).unwrap();
        assert_eq!(names(&s), ["bob", "ghost", "www-data"]);
        // A listed name with a folder but no user: backed up, no uid.
        assert_eq!(s.accounts[1].user, None);
        assert_eq!(s.accounts[2].user.as_ref().unwrap().uid, 33);
        assert_eq!(
            s.skipped,
            [
                Skipped {
                    name: "carol".into(),
                    why: Skip::NoFolder("/srv/carol/www".into())
                },
                Skipped {
                    name: "nofolder".into(),
                    why: Skip::Unknown("/srv/nofolder/www".into())
                },
            ]
        );
    }

    #[test]
    fn a_name_that_is_no_folder_name_never_reaches_the_path() {
        let cfg = config("names = [\"..\", \"a/b\", \"\", \".\", \"alice\"]");
        let s = select_with(&cfg, &host(), |p| {
            assert_eq!(p, Path::new("/srv/alice/www"), "looked at {p:?}");
            true
        })
        .unwrap();
        assert_eq!(names(&s), ["alice"]);
        assert!(s.skipped.iter().all(|s| s.why == Skip::BadName));
        assert_eq!(s.skipped.len(), 4);
        // The same from the user database (NSS returns what it is given).
        let db = Users(vec![user("..", 1000), user("x\u{fffd}", 1001)]);
        let s = select_with(&config(""), &db, |_| true).unwrap();
        assert!(s.accounts.is_empty());
        assert_eq!(s.skipped.len(), 2);
    }

    #[test]
    fn the_first_user_of_a_name_wins() {
        // NSS lists a name once per source (files, then ldap).
        let db = Users(vec![user("alice", 1000), user("alice", 5000)]);
        let s = select_with(&config(""), &db, |_| true).unwrap();
        assert_eq!(s.accounts.len(), 1);
        assert_eq!(s.accounts[0].user.as_ref().unwrap().uid, 1000);
    }

    #[test]
    fn restrict_keeps_the_named_and_refuses_any_other_naming_why() {
        let cfg = config("exclude = [\"bob\"]");
        let s = select_with(&cfg, &host(), folders).unwrap();
        let only = s
            .clone()
            .restrict(&["dave".into(), "alice".into()])
            .unwrap();
        assert_eq!(names(&only), ["alice", "dave"]);
        assert!(only.skipped.is_empty());
        assert_eq!(s.clone().restrict(&[]).unwrap(), s);
        let err = s
            .clone()
            .restrict(&[
                "alice".into(),
                "root".into(),
                "bob".into(),
                "carol".into(),
                "zed".into(),
            ])
            .unwrap_err()
            .to_string();
        for why in [
            "root: uid 0 is outside [accounts] uid_min..=uid_max (1000..=59999)",
            "bob: excluded",
            "carol: /srv/carol/www is not a folder",
            "zed: no such user",
        ] {
            assert!(err.contains(why), "{why} not in {err}");
        }
        assert!(!err.contains("alice"), "{err}");
        let s = select_with(&config("names = [\"alice\"]"), &host(), folders).unwrap();
        let err = s.restrict(&["bob".into()]).unwrap_err().to_string();
        assert!(err.contains("bob: not in [accounts] names"), "{err}");
    }

    /// The real user database: root is there with uid 0, and the default
    /// range leaves it out.
    #[test]
    fn the_system_user_database_has_root_outside_the_default_range() {
        let users = SystemUsers.all().unwrap();
        let root = users
            .iter()
            .find(|u| u.name == "root")
            .expect("root listed");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup("root").unwrap().as_ref(), Some(root));
        assert_eq!(lookup("no-such-user-snapfs").unwrap(), None);
        let s = select(&config("")).unwrap();
        assert!(s.accounts.iter().all(|a| a.name != "root"));
        let err = s.restrict(&["root".into()]).unwrap_err().to_string();
        assert!(err.contains("uid 0 is outside"), "{err}");
    }
}
