//! A scratch directory for files a test hands to a process by path (PEM
//! files named in environment variables, say).

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temp dir, removed with everything
/// in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `prefix` says which suite left the directory behind, should one
    /// outlive a killed test run.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("could not create {}: {err}", dir.display()));
        Self(dir)
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to the file `name` in it; returns its path as a
    /// string, the form an environment variable takes.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|err| panic!("could not write {path}: {err}"));
        path
    }

    /// The path `name` in it, whether or not such a file exists.
    pub fn path(&self, name: &str) -> String {
        self.0
            .join(name)
            .into_os_string()
            .into_string()
            .expect("a UTF-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_inside_and_removed_with_it() {
        let dir = TempDir::new("gigachat-test-support");
        let root = dir.root().to_owned();
        let file = dir.write("a.pem", "contents");
        assert!(Path::new(&file).starts_with(&root));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "contents");
        let missing = dir.path("missing.pem");
        assert!(Path::new(&missing).starts_with(&root));
        assert!(!Path::new(&missing).exists());
        assert_ne!(TempDir::new("gigachat-test-support").root(), root);
        drop(dir);
        assert!(!root.exists());
    }
}
