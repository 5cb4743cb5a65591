//! Errors a person can act on: every error found in a file names the file, line and column and
//! shows the offending line, like rustc; errors found while running name the host and task.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An error and its sources in one line (`a: b: c`), each cause named once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s.trim().to_string()
}

/// `./a/./b` → `a/b`: paths as a person would write them (`..` is kept).
pub fn tidy_path(p: &Path) -> PathBuf {
    let out: PathBuf = p
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// One loaded source file, shared by every node parsed from it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub line: usize,
    pub col: usize,
}

impl Loc {
    pub fn path(&self) -> &Path {
        &self.file.path
    }
    /// A location in a file the error has no node for (e.g. a missing file).
    pub fn file_only(path: &Path) -> Loc {
        Loc {
            file: Arc::new(SourceFile {
                path: path.to_path_buf(),
                text: String::new(),
            }),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.path.display())
        } else {
            write!(f, "{}:{}:{}", self.file.path.display(), self.line, self.col)
        }
    }
}

/// An error located in a file.
#[derive(Debug, Clone)]
pub struct LocatedError {
    pub loc: Loc,
    pub msg: String,
}

impl LocatedError {
    pub fn new(loc: &Loc, msg: impl Into<String>) -> Self {
        LocatedError {
            loc: loc.clone(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.loc, self.msg)?;
        if self.loc.line > 0 {
            if let Some(text) = self.loc.file.text.lines().nth(self.loc.line - 1) {
                let gutter = self.loc.line.to_string();
                writeln!(f, "{} |", " ".repeat(gutter.len()))?;
                writeln!(f, "{gutter} | {text}")?;
                write!(
                    f,
                    "{} | {}^",
                    " ".repeat(gutter.len()),
                    " ".repeat(self.loc.col.saturating_sub(1))
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for LocatedError {}

/// Result of loading or checking files.
pub type LoadResult<T> = Result<T, LocatedError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_line_and_caret() {
        let file = Arc::new(SourceFile {
            path: "play.yml".into(),
            text: "- hosts: all\n  taskz: []\n".into(),
        });
        let e = LocatedError::new(
            &Loc {
                file,
                line: 2,
                col: 3,
            },
            "unknown play keyword 'taskz'",
        );
        let s = e.to_string();
        assert!(
            s.starts_with("play.yml:2:3: unknown play keyword 'taskz'"),
            "{s}"
        );
        assert!(s.contains("2 |   taskz: []"), "{s}");
        assert!(s.ends_with("  |   ^"), "{s:?}");
    }
}
