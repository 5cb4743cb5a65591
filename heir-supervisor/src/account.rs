//! The account a supervised command runs as (`run --run-as USER`).
//!
//! The supervisor holds the registry's DB login and the news credentials; the command it
//! supervises (an Airflow scheduler running DAG code) must hold neither. So the supervisor runs
//! as root, reads its secrets from a root-only file, and the guard starts the command as an
//! unprivileged account: its uid, its primary gid (no supplementary groups: std drops root's
//! when it sets the uid), and that account's HOME/USER/LOGNAME.

use std::ffi::{CStr, CString};

use anyhow::{anyhow, bail, Result};

/// A local account, as `getpwnam` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl Account {
    /// Look `name` up in the system's user database.
    pub fn lookup(name: &str) -> Result<Account> {
        let cname =
            CString::new(name).map_err(|_| anyhow!("--run-as {name:?}: not a user name"))?;
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: getpwnam_r writes into `pwd` and `buf` (its length given), and sets `found`
        // to &pwd or null; the strings it points to live in `buf`, which outlives their use.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            );
            if rc != 0 {
                bail!(
                    "--run-as {name}: looking the user up: {}",
                    std::io::Error::from_raw_os_error(rc)
                );
            }
            if found.is_null() {
                bail!("--run-as {name}: no such user on this host");
            }
            let home = if pwd.pw_dir.is_null() {
                "/".to_string()
            } else {
                CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned()
            };
            Ok(Account {
                name: name.to_string(),
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
                home,
            })
        }
    }

    /// The account to run the command as, checked before anything starts: switching needs root,
    /// and running as root is what `--run-as` exists to avoid.
    pub fn for_run_as(name: &str) -> Result<Account> {
        let acct = Account::lookup(name)?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("--run-as {name}: the supervisor must run as root to start the command as another user");
        }
        if acct.uid == 0 {
            bail!("--run-as {name}: the command would run as root; name an unprivileged user");
        }
        Ok(acct)
    }

    /// The login variables of the account, replacing the supervisor's.
    pub fn login_env(&self) -> [(&'static str, String); 3] {
        [
            ("HOME", self.home.clone()),
            ("USER", self.name.clone()),
            ("LOGNAME", self.name.clone()),
        ]
    }
}

/// Environment variables of the supervisor that hold or point to its credentials: the guard,
/// and so the command, never inherits them.
pub const SUPERVISOR_SECRET_ENV: &[&str] = &[
    "HEIR_DSN",
    "HEIR_DSN_FILE",
    "HEIR_NEWS_URL",
    "HEIR_NEWS_KEY_FILE",
    "HEIR_NEWS_EXCHANGE",
    "HEIR_NEWS_CA_FILE",
    "HEIR_PG_CA_FILE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_root_and_refuses_unknown_users() {
        let root = Account::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.login_env()[1], ("USER", "root".to_string()));
        let err = Account::lookup("no-such-user-heirflow").unwrap_err();
        assert!(format!("{err}").contains("no such user"), "{err}");
        assert!(Account::lookup("a\0b").is_err());
    }

    #[test]
    fn run_as_root_is_refused() {
        let err = Account::for_run_as("root").unwrap_err();
        let msg = format!("{err}");
        assert!(
            msg.contains("would run as root") || msg.contains("must run as root"),
            "{msg}"
        );
    }
}
