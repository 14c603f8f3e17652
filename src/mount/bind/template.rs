//! Where an account's bind goes: `--bind-homes '/home/{account}/admin/backup'`.
//!
//! `{account}` must be a whole folder name, so that the home is exactly
//! the path up to it: the home must exist (a missing one is skipped), and
//! only the folders below it are made. The template must go on below the
//! home: binding over a home itself would hide everything in it.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

pub const PLACEHOLDER: &str = "{account}";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    /// The folder holding the homes: `/home`.
    above: PathBuf,
    /// The path from the home to the bind: `admin/backup`.
    below: PathBuf,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let bad = |why: &str| Error::Invalid(format!("--bind-homes {text:?}: {why}"));
        let path = Path::new(text);
        if !path.is_absolute() {
            return Err(bad("must be an absolute path"));
        }
        let (mut above, mut below) = (PathBuf::from("/"), PathBuf::new());
        let mut seen = false;
        for component in path.components() {
            match component {
                Component::RootDir => {}
                Component::Normal(name) if name == PLACEHOLDER => {
                    if seen {
                        return Err(bad("names {account} twice"));
                    }
                    seen = true;
                }
                Component::Normal(name) if name.to_string_lossy().contains(PLACEHOLDER) => {
                    return Err(bad("{account} must be a whole folder name"));
                }
                Component::Normal(name) if seen => below.push(name),
                Component::Normal(name) => above.push(name),
                _ => return Err(bad("no . or .. in it")),
            }
        }
        if !seen {
            return Err(bad("has no {account}"));
        }
        if below.as_os_str().is_empty() {
            return Err(bad(
                "must name a folder inside the home ({account}/admin/backup), \
                 not the home itself, which a bind would hide",
            ));
        }
        Ok(Template {
            text: text.to_string(),
            above,
            below,
        })
    }

    /// The account's home: it must exist for a bind.
    pub fn home(&self, account: &str) -> Result<PathBuf> {
        check_account(account)?;
        Ok(self.above.join(account))
    }

    /// Where the account's folder is bound.
    pub fn target(&self, account: &str) -> Result<PathBuf> {
        Ok(self.home(account)?.join(&self.below))
    }

    /// The folders from the home down to the bind, the last one included.
    pub(super) fn below(&self) -> &Path {
        &self.below
    }

    /// The account whose bind `path` is the place of, if it is one.
    pub fn account_of(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(&self.above).ok()?;
        let mut components = rest.components();
        let Some(Component::Normal(account)) = components.next() else {
            return None;
        };
        let account = account.to_str()?;
        (components.as_path() == self.below && check_account(account).is_ok())
            .then(|| account.to_string())
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An account name becomes one folder name in a path: it must not be able
/// to leave it (`..`, `/`) or cut it short (NUL).
pub fn check_account(account: &str) -> Result<()> {
    let bad = account.is_empty()
        || account == "."
        || account == ".."
        || account.contains(['/', '\0'])
        || OsStr::new(account).len() > 255;
    match bad {
        true => Err(Error::Invalid(format!(
            "account name {account:?} cannot be a folder name"
        ))),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_splits_at_the_home() {
        let t = Template::parse("/home/{account}/admin/backup").unwrap();
        assert_eq!(t.home("alice").unwrap(), Path::new("/home/alice"));
        assert_eq!(
            t.target("alice").unwrap(),
            Path::new("/home/alice/admin/backup")
        );
        assert_eq!(t.below(), Path::new("admin/backup"));
        assert_eq!(t.to_string(), "/home/{account}/admin/backup");
        // Doubled and trailing slashes mean the same path.
        let t2 = Template::parse("/home//{account}/admin/backup/").unwrap();
        assert_eq!(
            t2.target("bob").unwrap(),
            Path::new("/home/bob/admin/backup")
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (text, why) in [
            ("home/{account}/backup", "absolute"),
            ("/home/{account}", "not the home itself"),
            ("/home/{account}/{account}", "twice"),
            ("/home/user-{account}/backup", "whole folder name"),
            ("/home/../{account}/backup", ". or .."),
            ("/home/alice/backup", "has no {account}"),
        ] {
            let err = Template::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn account_names_that_would_leave_their_folder_are_refused() {
        let t = Template::parse("/home/{account}/admin/backup").unwrap();
        for account in ["", ".", "..", "a/b", "../root", "a\0b"] {
            assert!(t.target(account).is_err(), "{account:?}");
        }
        assert!(t.target(&"x".repeat(256)).is_err());
        assert!(t.target("alice.smith-2").is_ok());
    }

    #[test]
    fn the_account_of_a_bind_place() {
        let t = Template::parse("/home/{account}/admin/backup").unwrap();
        let of = |p: &str| t.account_of(Path::new(p));
        assert_eq!(of("/home/alice/admin/backup").as_deref(), Some("alice"));
        assert_eq!(of("/home/alice/admin/backup/x"), None);
        assert_eq!(of("/home/alice/admin"), None);
        assert_eq!(of("/home/admin/backup"), None);
        assert_eq!(of("/srv/alice/admin/backup"), None);
        assert_eq!(of("/home/../admin/backup"), None);
    }
}
