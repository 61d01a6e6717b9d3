//! `shortlink backup` and `shortlink restore`: the store and the objects of an
//! installation to a file and back, straight against the configured store.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use shortlink_control::backup::{ObjectsMode, Progress, backup, restore};

use crate::commands::{open_store, small_runtime};
use crate::config::Config;

/// How `--objects` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ObjectsArg {
    /// The objects' bytes go into the backup.
    Include,
    /// Only their keys: the restored installation reads the same bucket.
    Reference,
}

/// Prints a progress line on stderr.
fn reporter(what: &'static str) -> impl FnMut(&Progress) + Send + 'static {
    let started = Instant::now();
    move |progress: &Progress| {
        eprintln!(
            "{what}: {} in {:.1} s",
            progress.summary(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// `shortlink backup FILE`: writes a backup to FILE (`-`: standard output), through a
/// temporary file renamed into place once complete.
pub(crate) fn run_backup(config: Config, file: &Path, objects: Option<ObjectsArg>) -> Result<()> {
    let store = open_store(&config)?;
    let runtime = small_runtime()?;
    runtime.block_on(async {
        let object_store =
            shortlink_objects::open(&config.objects, &config.data_dir.join("objects"))
                .await
                .context("cannot open object storage")?;
        let mode = match objects {
            Some(ObjectsArg::Include) => ObjectsMode::Include,
            Some(ObjectsArg::Reference) => ObjectsMode::Reference,
            None => ObjectsMode::default_for(&*object_store),
        };
        let to_stdout = file == Path::new("-");
        let partial = file.with_extension("partial");
        let mut out: Box<dyn Write + Send> = if to_stdout {
            Box::new(std::io::stdout())
        } else {
            // It holds password hashes, keys and secrets: readable by its owner only.
            use std::os::unix::fs::OpenOptionsExt;
            Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?,
            ))
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            while let Some(chunk) = rx.blocking_recv() {
                out.write_all(&chunk)?;
            }
            out.flush()
        });
        let made = backup(&store, &*object_store, mode, tx, reporter("backup")).await;
        let written = writer.await.context("the writer failed")?;
        let outcome = made
            .map_err(anyhow::Error::from)
            .and_then(|p| written.map(|()| p).map_err(anyhow::Error::from));
        match outcome {
            Ok(_) if to_stdout => Ok(()),
            Ok(_) => std::fs::rename(&partial, file)
                .with_context(|| format!("cannot move the backup to {}", file.display())),
            Err(error) => {
                if !to_stdout {
                    let _ = std::fs::remove_file(&partial);
                }
                Err(error.context("backup failed"))
            }
        }
    })
}

/// `shortlink restore FILE`: restores a backup into the configured store, which must hold
/// no links, uploads or clicks (the file is read twice: see `restore`).
pub(crate) fn run_restore(config: Config, file: &Path) -> Result<()> {
    std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let store = open_store(&config)?;
    let path = file.to_owned();
    small_runtime()?.block_on(async {
        let object_store =
            shortlink_objects::open(&config.objects, &config.data_dir.join("objects"))
                .await
                .context("cannot open object storage")?;
        let open = move || std::fs::File::open(&path);
        let progress = restore(&store, &*object_store, open, reporter("restore"))
            .await
            .context("restore failed")?;
        if progress.missing_objects > 0 {
            eprintln!(
                "restore: {} objects named in the backup are not in the object storage",
                progress.missing_objects
            );
        }
        Ok(())
    })
}
