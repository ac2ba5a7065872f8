//! Where volumes go: `VolumeSink`, a byte stream that becomes a visible object only on
//! `finish`. Implemented by the store's multipart upload (production) and by a local file written
//! under a temporary name and renamed on finish (downloads, and tests of multi-GiB volumes).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::error::{Error, Result};

/// A stream of bytes that becomes visible as a whole object or file only on `finish`.
/// Dropping it without `finish` leaves nothing visible.
pub trait VolumeSink: AsyncWrite + Unpin + Send {
    fn finish(self) -> impl Future<Output = Result<()>> + Send;
}

/// A local file written as `<path>.partial` and renamed to `<path>` on finish.
pub struct FileSink {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    partial: PathBuf,
    path: PathBuf,
}

impl FileSink {
    pub async fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = tokio::fs::File::create(&partial)
            .await
            .map_err(|source| Error::Io {
                op: "creating",
                path: partial.clone(),
                source,
            })?;
        Ok(FileSink {
            file: Some(tokio::io::BufWriter::with_capacity(1 << 20, file)),
            partial,
            path,
        })
    }
}

impl AsyncWrite for FileSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::Error::other("write after finish"))),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl VolumeSink for FileSink {
    async fn finish(mut self) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let mut file = self.file.take().expect("finish once");
        file.flush().await.map_err(io("writing", &self.partial))?;
        file.get_ref()
            .sync_all()
            .await
            .map_err(io("syncing", &self.partial))?;
        tokio::fs::rename(&self.partial, &self.path)
            .await
            .map_err(io("renaming", &self.partial))?;
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
