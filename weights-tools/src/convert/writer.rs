//! Packs stored tensors into chunk files, hashing each chunk as it is written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sd_webgpu::Error;
use sd_webgpu::format::{ALIGN, FileEntry, hex};
use sha2::{Digest, Sha256};

pub struct ChunkWriter {
    dir: PathBuf,
    chunk_size: u64,
    current: Option<(BufWriter<File>, Sha256)>,
    pos: u64,
    pub chunks: Vec<FileEntry>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("cannot write {}: {e}", path.display()))
}

impl ChunkWriter {
    pub fn new(dir: &Path, chunk_size: u64) -> ChunkWriter {
        ChunkWriter {
            dir: dir.to_path_buf(),
            chunk_size,
            current: None,
            pos: 0,
            chunks: Vec::new(),
        }
    }

    /// Appends one stored tensor (or part); returns its chunk index and offset.
    pub fn add(&mut self, bytes: &[u8]) -> Result<(usize, u64), Error> {
        let aligned = self.pos.div_ceil(ALIGN) * ALIGN;
        if self.current.is_some() && aligned + bytes.len() as u64 > self.chunk_size {
            self.finish_chunk()?;
        }
        if self.current.is_none() {
            let name = format!("chunk-{:03}.bin", self.chunks.len());
            let path = self.dir.join(&name);
            let file = File::create(&path).map_err(io(&path))?;
            self.current = Some((BufWriter::with_capacity(1 << 20, file), Sha256::new()));
            self.chunks.push(FileEntry {
                path: name,
                size: 0,
                sha256: String::new(),
            });
            self.pos = 0;
        }
        let path = self.dir.join(&self.chunks.last().unwrap().path);
        let (file, hasher) = self.current.as_mut().unwrap();
        let pad = (self.pos.div_ceil(ALIGN) * ALIGN - self.pos) as usize;
        let zeros = [0u8; ALIGN as usize];
        file.write_all(&zeros[..pad]).map_err(io(&path))?;
        hasher.update(&zeros[..pad]);
        let offset = self.pos + pad as u64;
        file.write_all(bytes).map_err(io(&path))?;
        hasher.update(bytes);
        self.pos = offset + bytes.len() as u64;
        Ok((self.chunks.len() - 1, offset))
    }

    fn finish_chunk(&mut self) -> Result<(), Error> {
        if let Some((mut file, hasher)) = self.current.take() {
            let entry = self.chunks.last_mut().unwrap();
            let path = self.dir.join(&entry.path);
            file.flush().map_err(io(&path))?;
            file.into_inner()
                .map_err(|e| io(&path)(e.into_error()))?
                .sync_all()
                .map_err(io(&path))?;
            entry.size = self.pos;
            entry.sha256 = hex(&hasher.finalize());
        }
        Ok(())
    }

    /// Closes the last chunk and returns the list of chunks.
    pub fn finish(mut self) -> Result<Vec<FileEntry>, Error> {
        self.finish_chunk()?;
        Ok(self.chunks)
    }
}
