//! The host configuration, `/etc/snapfs/snapfs.toml`: which accounts a
//! nightly `snapfs run` backs up, and where each one's files, databases
//! and mail are.
//!
//! Every key is known: an unknown one (a typo, a key of a newer snapfs) is
//! an error that names it and its line, not a setting silently ignored —
//! a misspelt `exclude` would back up what the operator meant to leave out.
//! Sections that are absent switch a kind of data off (no `[postgresql]`:
//! no PostgreSQL dumps).

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repository::location::S3Credentials;

/// Where `snapfs run` looks without `--config` or `SNAPFS_CONFIG`.
pub const DEFAULT_PATH: &str = "/etc/snapfs/snapfs.toml";

/// A file holding a secret must be readable by its owner (root) alone: a
/// key that every local user can read is no longer a secret.
fn refuse_readable_secret(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.mode() & 0o077 != 0 || meta.uid() != unsafe { libc::geteuid() } {
        return Err(Error::Invalid(format!(
            "{} holds S3 credentials ([s3]) but is mode {:o}, owner uid {}: make it \
             the running user's alone (chmod 600), or give the credentials in \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid()
        )));
    }
    Ok(())
}

/// What `{account}` stands for in the path templates.
pub const ACCOUNT_PLACEHOLDER: &str = "{account}";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The repository every account is backed up into.
    pub repository: PathBuf,
    /// A Prometheus text file (node_exporter's textfile collector) written
    /// after each run.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    #[serde(default)]
    pub accounts: AccountsConfig,
    #[serde(default)]
    pub files: FilesConfig,
    pub postgresql: Option<PostgresqlConfig>,
    pub mysql: Option<MysqlConfig>,
    pub mail: Option<MailConfig>,
    /// Credentials of an S3 repository, for when the environment has none
    /// (the file must then be readable by root only).
    pub s3: Option<S3Credentials>,
}

/// Which accounts: exactly `names`, or every passwd user with a uid in
/// `uid_min..=uid_max` whose home exists; never those in `exclude`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    pub uid_min: u32,
    pub uid_max: u32,
    pub names: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            uid_min: 1000,
            uid_max: 59999,
            names: None,
            exclude: Vec::new(),
        }
    }
}

/// The account's files: `path` with `{account}` replaced; `exclude` are
/// globs as `backup --exclude` takes them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    pub path: String,
    pub exclude: Vec<String>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            path: "/home/{account}".into(),
            exclude: Vec::new(),
        }
    }
}

/// Which of a server's databases belong to an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseSelection {
    /// Databases owned by the role (PostgreSQL) named like the account.
    /// For MariaDB, which has no database owners: those on which the user
    /// named like the account holds privileges.
    Owner,
    /// Databases named `{account}` or `{account}_*`.
    Prefix,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresqlConfig {
    /// A socket folder (`/var/run/postgresql`) or a host name.
    #[serde(default = "PostgresqlConfig::default_host")]
    pub host: String,
    #[serde(default = "PostgresqlConfig::default_port")]
    pub port: u16,
    /// The role the dumps connect as.
    #[serde(default = "PostgresqlConfig::default_user")]
    pub user: String,
    #[serde(default = "PostgresqlConfig::default_selection")]
    pub databases: DatabaseSelection,
}

impl PostgresqlConfig {
    fn default_host() -> String {
        "/var/run/postgresql".into()
    }
    fn default_port() -> u16 {
        5432
    }
    fn default_user() -> String {
        "postgres".into()
    }
    fn default_selection() -> DatabaseSelection {
        DatabaseSelection::Owner
    }
}

/// MariaDB or MySQL.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    #[serde(default = "MysqlConfig::default_socket")]
    pub socket: PathBuf,
    #[serde(default = "MysqlConfig::default_user")]
    pub user: String,
    #[serde(default = "MysqlConfig::default_selection")]
    pub databases: DatabaseSelection,
}

impl MysqlConfig {
    fn default_socket() -> PathBuf {
        "/run/mysqld/mysqld.sock".into()
    }
    fn default_user() -> String {
        "root".into()
    }
    fn default_selection() -> DatabaseSelection {
        DatabaseSelection::Prefix
    }
}

/// The account's mail: a maildir tree, shown as `mails/`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    #[serde(default = "MailConfig::default_path")]
    pub path: String,
}

impl MailConfig {
    fn default_path() -> String {
        "/var/mail/{account}".into()
    }
}

impl HostConfig {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<HostConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "no configuration at {} (see /usr/share/doc/snapfs/snapfs.toml \
                     for a commented one, or give --config)",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let config = HostConfig::parse(&text)
            .map_err(|why| Error::Invalid(format!("{}: {why}", path.display())))?;
        if config.s3.is_some() {
            refuse_readable_secret(path)?;
        }
        Ok(config)
    }

    /// Parse and check a configuration; the error names the key and line.
    pub fn parse(text: &str) -> std::result::Result<HostConfig, String> {
        let config: HostConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.accounts.uid_min > self.accounts.uid_max {
            return Err(format!(
                "[accounts] uid_min {} is above uid_max {}",
                self.accounts.uid_min, self.accounts.uid_max
            ));
        }
        let mut templates = vec![("[files] path", &self.files.path)];
        if let Some(mail) = &self.mail {
            templates.push(("[mail] path", &mail.path));
        }
        for (key, template) in templates {
            if !template.contains(ACCOUNT_PLACEHOLDER) {
                return Err(format!(
                    "{key} = {template:?} has no {ACCOUNT_PLACEHOLDER}: every account would \
                     back up the same folder"
                ));
            }
            if !template.starts_with('/') {
                return Err(format!("{key} = {template:?} is not an absolute path"));
            }
        }
        Ok(())
    }
}

/// `template` with `{account}` replaced by `account`.
pub fn for_account(template: &str, account: &str) -> PathBuf {
    PathBuf::from(template.replace(ACCOUNT_PLACEHOLDER, account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_credentials_parse_are_never_shown_and_need_a_private_file() {
        let text = "repository = \"s3:http://h:1/b\"\n[s3]\naccess_key_id = \"AK\"\n\
                    secret_access_key = \"s3cr3t-value\"\nregion = \"eu-1\"\n";
        let config = HostConfig::parse(text).unwrap();
        let s3 = config.s3.clone().unwrap();
        assert_eq!(
            (s3.access_key_id.as_str(), s3.region.as_deref()),
            ("AK", Some("eu-1"))
        );
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let typo = text.replace("region", "regoin");
        assert!(HostConfig::parse(&typo).unwrap_err().contains("regoin"));

        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapfs.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = HostConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("s3cr3t-value"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(HostConfig::load(&path).unwrap(), config);
        // Without a secret, the mode is the operator's business.
        std::fs::write(&path, "repository = \"/r\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(HostConfig::load(&path).is_ok());
    }

    /// The example the packaging installs, as the issue gives it.
    const EXAMPLE: &str = r#"
repository = "/var/lib/snapfs/repository"
[accounts]
uid_min = 1000
uid_max = 59999
# names = ["alice", "bob"]
exclude = []
[files]
path = "/home/{account}"
exclude = ["/home/*/.cache"]
[postgresql]
host = "/var/run/postgresql"
port = 5432
user = "postgres"
databases = "owner"
[mysql]
socket = "/run/mysqld/mysqld.sock"
user = "root"
databases = "prefix"
[mail]
path = "/var/mail/{account}"
"#;

    #[test]
    fn the_documented_example_parses() {
        let config = HostConfig::parse(EXAMPLE).unwrap();
        assert_eq!(config.accounts, AccountsConfig::default());
        assert_eq!(config.files.exclude, ["/home/*/.cache"]);
        assert_eq!(
            config.postgresql.unwrap().databases,
            DatabaseSelection::Owner
        );
        assert_eq!(config.mysql.unwrap().databases, DatabaseSelection::Prefix);
        assert_eq!(
            for_account(&config.mail.unwrap().path, "alice"),
            Path::new("/var/mail/alice")
        );
    }

    /// What the package installs as /etc/snapfs/snapfs.toml.
    const SHIPPED: &str = include_str!("../../packaging/snapfs.toml");

    #[test]
    fn the_shipped_example_parses_and_backs_up_files_only() {
        let config = HostConfig::parse(SHIPPED).unwrap();
        assert_eq!(config.repository, Path::new("/var/lib/snapfs/repository"));
        assert_eq!(config.accounts, AccountsConfig::default());
        assert_eq!(config.files.path, FilesConfig::default().path);
        assert!(config.postgresql.is_none() && config.mysql.is_none() && config.mail.is_none());
        assert!(config.metrics_file.is_none());
    }

    /// Its commented-out settings (`#key`, `#[section]`; prose is `# `)
    /// are valid too once switched on, and give the documented defaults.
    #[test]
    fn the_shipped_examples_commented_settings_parse_when_switched_on() {
        let on: String = SHIPPED
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => line,
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        let config = HostConfig::parse(&on).unwrap();
        assert_eq!(config.accounts.names.as_ref().unwrap(), &["alice", "bob"]);
        let pg = config.postgresql.unwrap();
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.user.as_str(), pg.databases),
            (
                "/var/run/postgresql",
                5432,
                "postgres",
                DatabaseSelection::Owner
            )
        );
        let my = config.mysql.unwrap();
        assert_eq!(my.socket, MysqlConfig::default_socket());
        assert_eq!(my.databases, DatabaseSelection::Prefix);
        assert_eq!(config.mail.unwrap().path, MailConfig::default_path());
        assert!(config.metrics_file.is_some());
    }

    #[test]
    fn sections_left_out_switch_their_data_off() {
        let config = HostConfig::parse("repository = \"/r\"\n").unwrap();
        assert_eq!(config.files, FilesConfig::default());
        assert!(config.postgresql.is_none() && config.mysql.is_none() && config.mail.is_none());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = EXAMPLE.replace("exclude = [\"/home/*/.cache\"]", "exlude = [\"x\"]");
        let err = HostConfig::parse(&text).unwrap_err();
        assert!(err.contains("exlude") && err.contains("line 10"), "{err}");
        let err = HostConfig::parse("repository = \"/r\"\n[postgres]\n").unwrap_err();
        assert!(err.contains("postgres") && err.contains("line 2"), "{err}");
        let err =
            HostConfig::parse("repository = \"/r\"\n[mysql]\ndatabases = \"all\"\n").unwrap_err();
        assert!(err.contains("all") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn templates_need_the_account_and_an_absolute_path() {
        for bad in [
            "repository = \"/r\"\n[files]\npath = \"/home/shared\"\n",
            "repository = \"/r\"\n[mail]\npath = \"mail/{account}\"\n",
            "repository = \"/r\"\n[accounts]\nuid_min = 5\nuid_max = 4\n",
        ] {
            assert!(HostConfig::parse(bad).is_err(), "{bad}");
        }
        let err = HostConfig::parse("").unwrap_err();
        assert!(err.contains("repository"), "{err}");
    }

    #[test]
    fn a_missing_file_says_where_it_looked() {
        let err = HostConfig::load(Path::new("/nonexistent/snapfs.toml")).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert!(err.to_string().contains("/nonexistent/snapfs.toml"));
    }
}
