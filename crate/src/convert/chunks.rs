//! Packs stored tensors into chunks in memory, handing each one out as soon as it is full.

use sha2::{Digest, Sha256};

use crate::format::{ALIGN, FileEntry, hex};

/// A finished chunk file: `chunk-NNN.bin`, its bytes and their sha256 (lowercase hex).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub path: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// The chunk being filled, and the manifest entries of those handed out.
pub(crate) struct Chunks {
    chunk_size: u64,
    current: Option<Vec<u8>>,
    pub(crate) entries: Vec<FileEntry>,
}

impl Chunks {
    pub(crate) fn new(chunk_size: u64) -> Chunks {
        Chunks {
            chunk_size,
            current: None,
            entries: Vec::new(),
        }
    }

    /// Appends one stored tensor (or part) at the next 16-byte aligned offset, starting a new
    /// chunk when it would not fit; a chunk finished by that goes to `done`. Returns the
    /// tensor's chunk index and offset.
    pub(crate) fn add(&mut self, bytes: Vec<u8>, done: &mut Vec<Chunk>) -> (usize, u64) {
        if let Some(current) = &self.current {
            let aligned = (current.len() as u64).div_ceil(ALIGN) * ALIGN;
            if aligned + bytes.len() as u64 > self.chunk_size {
                done.extend(self.finish_chunk());
            }
        }
        let Some(current) = &mut self.current else {
            self.entries.push(FileEntry {
                path: format!("chunk-{:03}.bin", self.entries.len()),
                size: 0,
                sha256: String::new(),
            });
            // A tensor as big as a chunk is the chunk: no copy. Otherwise room for a whole
            // chunk up front, so filling it never reallocates.
            self.current = Some(if bytes.len() as u64 >= self.chunk_size {
                bytes
            } else {
                let mut buffer = Vec::with_capacity(self.chunk_size as usize);
                buffer.extend_from_slice(&bytes);
                buffer
            });
            return (self.entries.len() - 1, 0);
        };
        let offset = current.len().div_ceil(ALIGN as usize) * ALIGN as usize;
        current.resize(offset, 0);
        current.extend_from_slice(&bytes);
        (self.entries.len() - 1, offset as u64)
    }

    /// Closes the chunk being filled, if any, and returns it.
    pub(crate) fn finish_chunk(&mut self) -> Option<Chunk> {
        let bytes = self.current.take()?;
        let entry = self.entries.last_mut()?;
        entry.size = bytes.len() as u64;
        entry.sha256 = hex(&Sha256::digest(&bytes));
        Some(Chunk {
            path: entry.path.clone(),
            bytes,
            sha256: entry.sha256.clone(),
        })
    }
}
