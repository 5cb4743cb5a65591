//! `mount` (ansible.posix.mount): an fstab entry and the live mount.
//!
//! ```yaml
//! - mount:
//!     path: /srv/shared
//!     src: /dev/vdb1
//!     fstype: ext4
//!     opts: noatime
//!     state: mounted
//! ```
//! Probe (one round trip): the mount table lines for `path` (`/proc/self/mounts`) and the fstab
//! content. Plan (pure, [`plan_fstab`] and [`plan`]) as Ansible's: `present`/`mounted` rewrite
//! every fstab line for `path` whose fields differ (or append one: `src path fstype opts dump
//! passno`); `absent` drops those lines, unmounts and removes the empty mount point;
//! `mounted` creates the mount point and mounts when not mounted, and remounts (or, when the
//! device or type changed, unmounts and mounts) when the fstab entry changed; `unmounted`
//! unmounts; `remounted` always remounts (always changed). Apply: one round trip.
//! Deviations: `ephemeral` is not supported; `boot: false` adds `noauto` to the options.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::args::{de_opt_bool, de_opt_string};
use super::contract::{execute, NativeModule, Planned};
use super::fileops::{self, Attrs, WriteOpts};
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    src: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    fstype: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    opts: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    dump: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    passno: Option<String>,
    #[serde(default)]
    state: Option<State>,
    #[serde(default, deserialize_with = "de_opt_string")]
    fstab: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    backup: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    boot: Option<bool>,
    #[serde(default)]
    opts_no_log: Option<Value>,
}

/// fstab/mtab escaping of spaces, tabs, newlines and backslashes.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub src: String,
    pub path: String,
    pub fstype: String,
    pub opts: String,
    pub dump: String,
    pub passno: String,
}

impl Entry {
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            escape(&self.src),
            escape(&self.path),
            self.fstype,
            self.opts,
            self.dump,
            self.passno
        )
    }
}

/// Pure: new fstab text (`None` if unchanged). `want: None` removes the entries for `path`.
pub fn plan_fstab(text: &str, path: &str, want: Option<&Entry>) -> Option<String> {
    let ep = escape(path);
    let mut out = String::new();
    let mut found = false;
    let mut changed = false;
    for l in text.split_inclusive('\n') {
        let t = l.trim();
        let f: Vec<&str> = t.split_whitespace().collect();
        if t.starts_with('#') || f.len() < 4 || f[1] != ep {
            out.push_str(l);
            if !l.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        found = true;
        match want {
            None => changed = true,
            Some(w) => {
                let same = f[0] == escape(&w.src)
                    && f[2] == w.fstype
                    && f[3] == w.opts
                    && f.get(4).copied().unwrap_or("0") == w.dump
                    && f.get(5).copied().unwrap_or("0") == w.passno;
                if same {
                    out.push_str(l);
                    if !l.ends_with('\n') {
                        out.push('\n');
                    }
                } else {
                    changed = true;
                    out.push_str(&w.line());
                }
            }
        }
    }
    if let (Some(w), false) = (want, found) {
        out.push_str(&w.line());
        changed = true;
    }
    changed.then_some(out)
}

/// The mounted source and type of `path` from mount table lines, if mounted.
pub fn mounted(mounts: &str, path: &str) -> Option<(String, String)> {
    let ep = escape(path.trim_end_matches('/'));
    let ep = if ep.is_empty() { "/".to_string() } else { ep };
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[1] == ep).then(|| (f[0].to_string(), f[2].to_string()))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Mount,
    Remount,
    Reattach,
    Unmount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Mounted,
    Present,
    Absent,
    Unmounted,
    Remounted,
}

/// Pure: the live action for `state`.
pub fn plan(
    state: State,
    fstab_changed: bool,
    live: Option<&(String, String)>,
    want: Option<&Entry>,
) -> Option<Action> {
    match state {
        State::Mounted => match live {
            None => Some(Action::Mount),
            Some((src, fs)) if fstab_changed => match want {
                Some(w) if (w.src != *src || w.fstype != *fs) => Some(Action::Reattach),
                _ => Some(Action::Remount),
            },
            Some(_) => None,
        },
        State::Unmounted | State::Absent => live.map(|_| Action::Unmount),
        State::Remounted => Some(Action::Remount),
        State::Present => None,
    }
}

pub struct Mount;

/// The arguments resolved: aliases merged, required ones checked.
struct Want {
    path: String,
    state: State,
    fstab: String,
    /// The fstab entry for `mounted`/`present`.
    entry: Option<Entry>,
}

impl Params {
    fn want(&self) -> Result<Want, ModuleError> {
        let _ = &self.opts_no_log;
        let path = self
            .path
            .clone()
            .or(self.name.clone())
            .ok_or_else(|| ModuleError::Args("mount: path is required".into()))?;
        let path = if path.len() > 1 {
            path.trim_end_matches('/').to_string()
        } else {
            path
        };
        let state = self.state.unwrap_or_default();
        let entry = if matches!(state, State::Mounted | State::Present) {
            let name = if state == State::Mounted {
                "mounted"
            } else {
                "present"
            };
            let src = self.src.clone().ok_or_else(|| {
                ModuleError::Args(format!("mount: src is required with state={name}"))
            })?;
            let fstype = self.fstype.clone().ok_or_else(|| {
                ModuleError::Args(format!("mount: fstype is required with state={name}"))
            })?;
            let mut opts = self.opts.clone().unwrap_or_else(|| "defaults".into());
            if self.boot == Some(false) && !opts.split(',').any(|o| o == "noauto") {
                opts = if opts == "defaults" {
                    "noauto".into()
                } else {
                    format!("{opts},noauto")
                };
            }
            Some(Entry {
                src,
                path: path.clone(),
                fstype,
                opts,
                dump: self.dump.clone().unwrap_or_else(|| "0".into()),
                passno: self.passno.clone().unwrap_or_else(|| "0".into()),
            })
        } else {
            None
        };
        Ok(Want {
            path,
            state,
            fstab: self.fstab.clone().unwrap_or_else(|| "/etc/fstab".into()),
            entry,
        })
    }
}

/// What the probe saw.
pub struct Observed {
    /// Mounted source and type of the path, if mounted.
    pub live: Option<(String, String)>,
    /// The fstab's text.
    pub fstab: String,
}

pub struct Changes {
    new_fstab: Option<String>,
    action: Option<Action>,
}

#[async_trait]
impl Module for Mount {
    literal_params!("mount");
    fn required(&self) -> &'static [&'static [&'static str]] {
        &[&["path", "name"], &["state"]]
    }
    fn names(&self) -> &'static [&'static str] {
        &["mount"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

#[async_trait]
impl NativeModule for Mount {
    type Params = Params;
    type Observed = Observed;
    type Plan = Changes;
    const NAME: &'static str = "mount";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        let w = p.want()?;
        let probe = format!(
            "awk -v p={} '$2==p' /proc/self/mounts 2>/dev/null | sed 's/^/M|/'; {}",
            quote(&escape(&w.path)),
            fileops::content_cmd(&w.fstab)
        );
        let r = ctx.sh(&probe).await?;
        let mounts: String = r
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("M|"))
            .map(|l| format!("{l}\n"))
            .collect();
        let fstab = fileops::parse_content(&r.stdout)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(Observed {
            live: mounted(&mounts, &w.path),
            fstab,
        })
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Changes>, ModuleError> {
        let Want {
            path,
            state,
            fstab,
            entry,
        } = p.want()?;
        let new_fstab = match state {
            State::Mounted | State::Present => plan_fstab(&seen.fstab, &path, entry.as_ref()),
            State::Absent => plan_fstab(&seen.fstab, &path, None),
            State::Unmounted | State::Remounted => None,
        };
        let action = plan(
            state,
            new_fstab.is_some(),
            seen.live.as_ref(),
            entry.as_ref(),
        );
        let changed = new_fstab.is_some() || action.is_some();
        let mut out = Outcome::changed(changed)
            .with("name", path)
            .with("fstab", fstab.clone());
        if let Some(w) = entry {
            out = out
                .with("src", w.src)
                .with("fstype", w.fstype)
                .with("opts", w.opts)
                .with("dump", w.dump)
                .with("passno", w.passno);
        }
        if diff {
            if let Some(n) = &new_fstab {
                out.diffs.push(FileDiff {
                    path: fstab,
                    before: seen.fstab.clone(),
                    after: n.clone(),
                });
            }
        }
        Ok(Planned::when(changed, Changes { new_fstab, action }, out))
    }

    async fn apply(
        &self,
        p: &Params,
        c: Changes,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let Want {
            path,
            state,
            fstab,
            entry,
        } = p.want()?;
        let qp = quote(&path);
        let t_flag = if fstab != "/etc/fstab" {
            format!("-T {} ", quote(&fstab))
        } else {
            String::new()
        };
        let mut s = String::new();
        if c.new_fstab.is_some() {
            let attrs = Attrs::default();
            let wo = WriteOpts {
                attrs: &attrs,
                validate: None,
                backup: p.backup.unwrap_or(false),
                mkdirs: false,
                source: None,
            };
            s.push_str(&format!(
                "( {} ) || exit 1; ",
                fileops::write_script(&fstab, &wo)?
            ));
        }
        // Mount through the fstab entry (`-T` for a non-default fstab), as Ansible does.
        let mount_cmd = format!("mount {t_flag}{qp}");
        match c.action {
            Some(Action::Mount) => {
                s.push_str(&format!(
                    "mkdir -p -- {qp} || exit 2; {mount_cmd} || exit 2; "
                ));
            }
            Some(Action::Remount) => {
                let o = entry
                    .as_ref()
                    .map(|w| format!("remount,{}", w.opts))
                    .unwrap_or_else(|| "remount".into());
                s.push_str(&format!(
                    "mount -o {} {qp} || {{ umount {qp} && {mount_cmd}; }} || exit 2; ",
                    quote(&o)
                ));
            }
            Some(Action::Reattach) => {
                s.push_str(&format!("umount {qp} && {mount_cmd} || exit 2; "));
            }
            Some(Action::Unmount) => {
                s.push_str(&format!("umount {qp} || exit 3; "));
            }
            None => {}
        }
        if state == State::Absent {
            s.push_str(&format!("rmdir -- {qp} 2>/dev/null; "));
        }
        s.push_str("true");
        let r = match &c.new_fstab {
            Some(n) => ctx.sh_stdin(&s, n.as_bytes()).await?,
            None => ctx.sh(&s).await?,
        };
        if r.rc != 0 {
            let what = match r.rc {
                2 => "Error mounting",
                3 => "Error unmounting",
                _ => "Error writing the fstab for",
            };
            let mut f = Outcome::failed(format!("{what} {path}: {}", r.stderr.trim()));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn entry() -> Entry {
        Entry {
            src: "/dev/vdb1".into(),
            path: "/srv/data".into(),
            fstype: "ext4".into(),
            opts: "noatime".into(),
            dump: "0".into(),
            passno: "0".into(),
        }
    }

    #[test]
    fn every_arg_is_accepted() {
        let m: Map<String, Value> = Params::accepted()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(
            serde_json::from_value::<Params>(json!({"path": "/x", "fs_type": "ext4"})).is_err()
        );
    }

    #[test]
    fn fstab_plans() {
        let w = entry();
        let base = "# fstab\nUUID=1 / ext4 defaults 0 1\n";
        assert_eq!(
            plan_fstab(base, "/srv/data", Some(&w)).unwrap(),
            format!("{base}/dev/vdb1 /srv/data ext4 noatime 0 0\n")
        );
        let with = format!("{base}/dev/vdb1   /srv/data  ext4 noatime\n");
        assert_eq!(plan_fstab(&with, "/srv/data", Some(&w)), None);
        let mut w2 = entry();
        w2.opts = "defaults".into();
        assert_eq!(
            plan_fstab(&with, "/srv/data", Some(&w2)).unwrap(),
            format!("{base}/dev/vdb1 /srv/data ext4 defaults 0 0\n")
        );
        assert_eq!(plan_fstab(&with, "/srv/data", None).unwrap(), base);
        assert_eq!(plan_fstab(base, "/srv/data", None), None);
    }

    #[test]
    fn spaces_are_escaped() {
        let mut w = entry();
        w.path = "/srv/my data".into();
        assert_eq!(w.line(), "/dev/vdb1 /srv/my\\040data ext4 noatime 0 0\n");
        let t = w.line();
        assert_eq!(plan_fstab(&t, "/srv/my data", Some(&w)), None);
        assert!(mounted("/dev/vdb1 /srv/my\\040data ext4 rw 0 0\n", "/srv/my data").is_some());
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(
            json!({"path": "/srv/data/", "src": "/dev/vdb1", "fstype": "ext4", "opts": "noatime", "state": "mounted"}),
        )
        .unwrap();
        let live = Some(("/dev/vdb1".to_string(), "ext4".to_string()));
        let done = Observed {
            live: live.clone(),
            fstab: entry().line(),
        };
        let pl = Mount.plan(&p, &done, true).unwrap();
        assert!(pl.changes.is_none() && !pl.outcome.changed && pl.outcome.diffs.is_empty());
        assert_eq!(pl.outcome.data["name"], json!("/srv/data"));
        let other_opts = Observed {
            live,
            fstab: "/dev/vdb1 /srv/data ext4 defaults 0 0\n".into(),
        };
        let pl = Mount.plan(&p, &other_opts, true).unwrap();
        let c = pl.changes.unwrap();
        assert_eq!(c.action, Some(Action::Remount));
        assert_eq!(c.new_fstab.as_deref(), Some(entry().line().as_str()));
        assert_eq!(pl.outcome.diffs.len(), 1);
        let bad = serde_json::from_value::<Params>(json!({"path": "/x", "state": "ephemeral"}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }

    #[test]
    fn live_actions() {
        let w = entry();
        let live = ("/dev/vdb1".to_string(), "ext4".to_string());
        assert_eq!(
            plan(State::Mounted, false, None, Some(&w)),
            Some(Action::Mount)
        );
        assert_eq!(plan(State::Mounted, false, Some(&live), Some(&w)), None);
        assert_eq!(
            plan(State::Mounted, true, Some(&live), Some(&w)),
            Some(Action::Remount)
        );
        let other = ("/dev/vdc1".to_string(), "ext4".to_string());
        assert_eq!(
            plan(State::Mounted, true, Some(&other), Some(&w)),
            Some(Action::Reattach)
        );
        assert_eq!(plan(State::Present, true, None, Some(&w)), None);
        assert_eq!(
            plan(State::Unmounted, false, Some(&live), None),
            Some(Action::Unmount)
        );
        assert_eq!(plan(State::Unmounted, false, None, None), None);
        assert_eq!(
            plan(State::Remounted, false, Some(&live), None),
            Some(Action::Remount)
        );
    }
}
