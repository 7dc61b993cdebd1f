//! The on-disk spool for audit frames that could not be sent.
//!
//! Files `pending-<pid>-<unix nanos>.ndjson` (mode 0600, directory 0700), one frame per line,
//! written with an fsync of the file and of the directory, so a spooled event survives a crash.
//! A file is deleted only after every line in it was sent; a resend after a partial failure
//! duplicates nothing, because the ledger is idempotent on the event id.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use caracal_shared::audit::Frame;

/// The spool directory.
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating it 0700 if needed) the spool at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Self { dir })
    }

    /// Writes `frames` to a new file, durably.
    pub fn append(&self, frames: &[Frame]) -> io::Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let path = self.dir.join(format!("pending-{}-{nanos}.ndjson", std::process::id()));
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        let mut buf = Vec::with_capacity(frames.len() * 512);
        for frame in frames {
            serde_json::to_writer(&mut buf, frame).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_all()?;
        File::open(&self.dir)?.sync_all()
    }

    /// Spooled files, oldest first.
    pub fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The frames of one file; unparsable lines are skipped (and logged), never resent forever.
    pub fn read(&self, path: &Path) -> io::Result<Vec<Frame>> {
        let mut frames = Vec::new();
        for line in BufReader::new(File::open(path)?).lines() {
            let line = line?;
            match serde_json::from_str::<Frame>(&line) {
                Ok(f) => frames.push(f),
                Err(e) => tracing::error!(file = %path.display(), error = %e, "unparsable audit spool line skipped"),
            }
        }
        Ok(frames)
    }

    /// Removes a file whose frames were all sent.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    /// Number of spooled files and their total size.
    pub fn usage(&self) -> (usize, u64) {
        self.files().map(|f| (f.len(), f.iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.len()).sum())).unwrap_or((0, 0))
    }

    /// Checks that a file can be created and removed.
    pub fn probe(&self) -> io::Result<()> {
        let p = self.dir.join(format!(".ready-{}", std::process::id()));
        File::create(&p)?;
        fs::remove_file(p)
    }
}

#[cfg(test)]
mod tests {
    use caracal_shared::audit::AuditEvent;

    use super::*;

    #[test]
    fn frames_round_trip_through_files() {
        let dir = std::env::temp_dir().join(format!("caracal-spool-{}", uuid::Uuid::new_v4().simple()));
        let spool = Spool::open(&dir).unwrap();
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame::seal(&AuditEvent::new("z", "t", &format!("r{i}"), "allow", "executed", serde_json::Value::Null), Some(b"k")))
            .collect();
        spool.append(&frames[..2]).unwrap();
        spool.append(&frames[2..]).unwrap();
        let files = spool.files().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
        let read: Vec<Frame> = files.iter().flat_map(|f| spool.read(f).unwrap()).collect();
        assert_eq!(read, frames, "order and content survive");
        spool.probe().unwrap();
        for f in files {
            spool.remove(&f).unwrap();
        }
        assert_eq!(spool.usage(), (0, 0));
        fs::remove_dir_all(dir).unwrap();
    }
}
