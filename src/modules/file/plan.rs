//! The pure half of `file`: what the path should become ([`Want`]), what the probe saw
//! ([`Observed`]), and the actions between them ([`plan`]).

use crate::modules::fileops::{self, AttrChange, Attrs, FileState, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    File,
    Directory,
    Link,
    Hard,
    Absent,
    Touch,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            State::File => "file",
            State::Directory => "directory",
            State::Link => "link",
            State::Hard => "hard",
            State::Absent => "absent",
            State::Touch => "touch",
        }
    }
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// lstat of the path.
    pub lstat: FileState,
    /// stat following links (equals `lstat` for non-links).
    pub stat: FileState,
    pub link_target: Option<String>,
    pub inode: Option<u64>,
    pub src_inode: Option<u64>,
    pub src_exists: bool,
    pub dir_empty: bool,
    /// With recurse: something below has other owner/group/mode.
    pub deep_mismatch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Remove,
    Mkdir,
    /// `ln -sfn`; `clear` removes what is there first (file or empty dir).
    Symlink {
        src: String,
        clear: bool,
    },
    Hardlink {
        src: String,
    },
    Touch,
    Attrs {
        changes: Vec<AttrChange>,
        nofollow: bool,
        recurse: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub state: State,
    pub src: Option<String>,
    pub attrs: Attrs,
    pub recurse: bool,
    pub force: bool,
    pub follow: bool,
}

/// Pure: the state Ansible picks when none is given.
pub fn default_state(given: Option<State>, recurse: bool, have: &FileState) -> State {
    if let Some(s) = given {
        return s;
    }
    if recurse {
        return State::Directory;
    }
    match have.kind {
        Kind::Dir => State::Directory,
        Kind::Link => State::Link,
        _ => State::File,
    }
}

/// Pure: the actions that bring `path` to `want` from `o`.
pub fn plan(path: &str, want: &Want, o: &Observed) -> Result<Vec<Action>, String> {
    let mut acts = Vec::new();
    // The state whose attributes matter after the main action.
    let attrs_of = |st: &FileState| fileops::attr_changes(&want.attrs, st);
    match want.state {
        State::Absent => {
            if o.lstat.exists() {
                acts.push(Action::Remove);
            }
            return Ok(acts);
        }
        State::File => {
            let st = if want.follow { &o.stat } else { &o.lstat };
            match st.kind {
                Kind::Absent => {
                    return Err(format!("file ({path}) is absent, cannot continue"));
                }
                Kind::File | Kind::Link | Kind::Other => {}
                Kind::Dir => return Err(format!("file ({path}) is directory, cannot continue")),
            }
            let ch = attrs_of(st);
            if !ch.is_empty() {
                acts.push(Action::Attrs {
                    changes: ch,
                    nofollow: !want.follow,
                    recurse: false,
                });
            }
        }
        State::Directory => {
            let st = if want.follow { &o.stat } else { &o.lstat };
            match st.kind {
                Kind::Absent => {
                    acts.push(Action::Mkdir);
                    let ch = attrs_of(&FileState::absent());
                    if !ch.is_empty() {
                        acts.push(Action::Attrs {
                            changes: ch,
                            nofollow: false,
                            recurse: want.recurse,
                        });
                    }
                    return Ok(acts);
                }
                Kind::Dir => {}
                _ => {
                    return Err(format!(
                        "there is already a {} at {path}; it cannot be made a directory",
                        o.lstat.kind.name()
                    ))
                }
            }
            let mut ch = attrs_of(st);
            if want.recurse && ch.is_empty() && o.deep_mismatch {
                ch = attrs_of(&FileState::absent());
            }
            if !ch.is_empty() {
                if want.recurse {
                    // Apply every wanted attribute below, like Ansible's recurse.
                    ch = attrs_of(&FileState::absent());
                }
                acts.push(Action::Attrs {
                    changes: ch,
                    nofollow: false,
                    recurse: want.recurse,
                });
            }
        }
        State::Link => {
            let src = want
                .src
                .clone()
                .ok_or_else(|| format!("src is required for creating the link {path}"))?;
            if !o.src_exists && !want.force {
                return Err(format!(
                    "src file does not exist, use \"force=yes\" if you really want to create the link: {src}"
                ));
            }
            match o.lstat.kind {
                Kind::Link if o.link_target.as_deref() == Some(src.as_str()) => {}
                Kind::Link | Kind::Absent => acts.push(Action::Symlink { src, clear: false }),
                Kind::Dir if o.dir_empty && want.force => {
                    acts.push(Action::Symlink { src, clear: true })
                }
                Kind::Dir if !want.force => {
                    return Err(format!(
                        "refusing to convert from directory to symlink for {path}"
                    ))
                }
                Kind::Dir => {
                    return Err(format!(
                        "the directory {path} is not empty, refusing to convert it"
                    ))
                }
                _ if want.force => acts.push(Action::Symlink { src, clear: true }),
                _ => {
                    return Err(format!(
                        "refusing to convert from file to symlink for {path}"
                    ))
                }
            }
            // Ownership of the link itself; modes of symlinks are meaningless on Linux.
            let mut want_attrs = want.attrs.clone();
            want_attrs.mode = None;
            let basis = if acts.is_empty() {
                o.lstat.clone()
            } else {
                FileState::absent()
            };
            let ch = fileops::attr_changes(&want_attrs, &basis);
            if !ch.is_empty() {
                acts.push(Action::Attrs {
                    changes: ch,
                    nofollow: true,
                    recurse: false,
                });
            }
        }
        State::Hard => {
            let src = want
                .src
                .clone()
                .ok_or_else(|| format!("src is required for creating the link {path}"))?;
            if o.src_inode.is_none() {
                return Err(format!("src does not exist: {src}"));
            }
            let same = o.lstat.kind == Kind::File && o.inode.is_some() && o.inode == o.src_inode;
            if !same {
                match o.lstat.kind {
                    Kind::Absent => {}
                    Kind::Dir => return Err(format!("cannot link: {path} is a directory")),
                    _ if !want.force && o.lstat.kind != Kind::Link => {
                        return Err(format!("Cannot link, file exists at destination: {path}"))
                    }
                    _ => {}
                }
                acts.push(Action::Hardlink { src });
            }
            // Attributes are shared with src: compare against the link's inode data.
            let basis = if same {
                o.lstat.clone()
            } else {
                o.stat.clone()
            };
            let ch = attrs_of(&basis);
            if !ch.is_empty() {
                acts.push(Action::Attrs {
                    changes: ch,
                    nofollow: false,
                    recurse: false,
                });
            }
        }
        State::Touch => {
            if o.lstat.kind == Kind::Dir || o.stat.kind == Kind::Dir {
                // touching a directory only updates its times.
            }
            acts.push(Action::Touch);
            let basis = if o.stat.exists() {
                o.stat.clone()
            } else {
                FileState::absent()
            };
            let ch = attrs_of(&basis);
            if !ch.is_empty() {
                acts.push(Action::Attrs {
                    changes: ch,
                    nofollow: false,
                    recurse: false,
                });
            }
        }
    }
    Ok(acts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fileops::parse_stat;

    fn st(s: &str) -> FileState {
        parse_stat(s).unwrap()
    }
    fn obs(l: &str) -> Observed {
        Observed {
            lstat: st(l),
            stat: st(l),
            link_target: None,
            inode: None,
            src_inode: None,
            src_exists: true,
            dir_empty: false,
            deep_mismatch: false,
        }
    }
    fn want(state: State) -> Want {
        Want {
            state,
            src: None,
            attrs: Attrs::default(),
            recurse: false,
            force: false,
            follow: true,
        }
    }
    const FILE: &str = "S|regular file|644|root|0|root|0|3";
    const DIR: &str = "S|directory|755|root|0|root|0|4096";

    #[test]
    fn directory_states() {
        let w = want(State::Directory);
        assert_eq!(
            plan("/d", &w, &obs("S|absent")).unwrap(),
            vec![Action::Mkdir]
        );
        assert!(plan("/d", &w, &obs(DIR)).unwrap().is_empty());
        assert!(plan("/d", &w, &obs(FILE)).is_err());
        let mut w = want(State::Directory);
        w.attrs.mode = Some(0o700);
        assert_eq!(
            plan("/d", &w, &obs(DIR)).unwrap(),
            vec![Action::Attrs {
                changes: vec![AttrChange::Mode(0o700)],
                nofollow: false,
                recurse: false
            }]
        );
    }

    #[test]
    fn recurse_uses_deep_probe() {
        let mut w = want(State::Directory);
        w.recurse = true;
        w.attrs.owner = Some("root".into());
        let mut o = obs(DIR);
        assert!(plan("/d", &w, &o).unwrap().is_empty());
        o.deep_mismatch = true;
        let a = plan("/d", &w, &o).unwrap();
        assert!(matches!(&a[0], Action::Attrs { recurse: true, .. }));
    }

    #[test]
    fn absent_and_touch() {
        assert!(plan("/f", &want(State::Absent), &obs("S|absent"))
            .unwrap()
            .is_empty());
        assert_eq!(
            plan("/f", &want(State::Absent), &obs(FILE)).unwrap(),
            vec![Action::Remove]
        );
        // touch always changes, even when the file exists
        assert_eq!(
            plan("/f", &want(State::Touch), &obs(FILE)).unwrap(),
            vec![Action::Touch]
        );
    }

    #[test]
    fn file_state_requires_existing_file() {
        assert!(plan("/f", &want(State::File), &obs("S|absent")).is_err());
        assert!(plan("/f", &want(State::File), &obs(FILE))
            .unwrap()
            .is_empty());
        assert!(plan("/f", &want(State::File), &obs(DIR)).is_err());
    }

    #[test]
    fn links() {
        let mut w = want(State::Link);
        w.src = Some("/opt/a".into());
        assert_eq!(
            plan("/l", &w, &obs("S|absent")).unwrap(),
            vec![Action::Symlink {
                src: "/opt/a".into(),
                clear: false
            }]
        );
        let mut o = obs("S|symbolic link|777|root|0|root|0|6");
        o.link_target = Some("/opt/a".into());
        assert!(plan("/l", &w, &o).unwrap().is_empty());
        o.link_target = Some("/opt/b".into());
        assert_eq!(plan("/l", &w, &o).unwrap().len(), 1);
        // a regular file is only replaced with force
        assert!(plan("/l", &w, &obs(FILE)).is_err());
        w.force = true;
        assert!(matches!(
            plan("/l", &w, &obs(FILE)).unwrap()[0],
            Action::Symlink { clear: true, .. }
        ));
        // missing src without force fails
        let mut w = want(State::Link);
        w.src = Some("/nope".into());
        let mut o = obs("S|absent");
        o.src_exists = false;
        assert!(plan("/l", &w, &o).is_err());
    }

    #[test]
    fn hard_links_compare_inodes() {
        let mut w = want(State::Hard);
        w.src = Some("/a".into());
        let mut o = obs(FILE);
        o.inode = Some(5);
        o.src_inode = Some(5);
        assert!(plan("/h", &w, &o).unwrap().is_empty());
        o.src_inode = Some(6);
        assert!(plan("/h", &w, &o).is_err());
        w.force = true;
        assert_eq!(
            plan("/h", &w, &o).unwrap(),
            vec![Action::Hardlink { src: "/a".into() }]
        );
    }

    #[test]
    fn default_state_follows_what_exists() {
        assert_eq!(default_state(None, false, &st(DIR)), State::Directory);
        assert_eq!(default_state(None, false, &st("S|absent")), State::File);
        assert_eq!(default_state(None, true, &st("S|absent")), State::Directory);
    }
}
