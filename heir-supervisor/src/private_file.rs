//! Files that hold a secret (voters' secret, DB passwords, the news key): read only when no one
//! but their owner may access them.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Read a file holding a secret (`what`: for the messages), refusing one that the group or
/// others may access: any local user could read the secret (or, if writable, replace it), so
/// the supervisor refuses to start rather than run on it. The mode is that of the opened file
/// (after symlinks), so it cannot change between the check and the read.
pub fn read(path: &Path, what: &str) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    let mode = f
        .metadata()
        .with_context(|| format!("reading the {what} {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "the {what} {p} has mode {mode:04o}: other users may access it; run `chmod 600 {p}`",
            p = path.display()
        );
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    Ok(text)
}

/// A file in the temp dir with `text` and `mode`, removed on drop (no tempfile crate).
#[cfg(test)]
pub struct TempFile(pub std::path::PathBuf);

#[cfg(test)]
impl TempFile {
    pub fn new(tag: &str, text: &str, mode: u32) -> TempFile {
        use std::os::unix::fs::PermissionsExt;
        let name = format!("heir-secret-{tag}-{}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        TempFile(path)
    }
}

#[cfg(test)]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
