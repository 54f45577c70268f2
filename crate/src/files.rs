//! Where a model's files come from ([`ModelFiles`]): files by their path relative to the model
//! folder, from memory, from a folder on disk ([`DirFiles`]), from a converted model
//! ([`crate::format`]). The lowest layer of loading: `format` implements it, and
//! [`crate::model::StableDiffusion::load`] reads through it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Error;
use crate::weights::WeightSource;

/// Where a model's files come from, by their path relative to the model folder
/// (`"unet/config.json"`).
pub trait ModelFiles {
    /// The file's bytes, or `None` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error>;

    /// For messages: where `path` is (a full path natively).
    fn describe(&self, path: &str) -> String {
        path.to_string()
    }

    /// The weights of `component` (`text_encoder`, `unet`, `vae`) when they come from another
    /// source than the component's safetensors file (a converted model, see
    /// [`crate::format`]); `None`, the default, reads the safetensors file.
    fn weights(&self, component: &str) -> Result<Option<Arc<dyn WeightSource>>, Error> {
        let _ = component;
        Ok(None)
    }
}

/// Files held in memory, by relative path.
impl ModelFiles for BTreeMap<String, Vec<u8>> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get(path).cloned())
    }
}

/// A folder on disk.
#[cfg(not(target_arch = "wasm32"))]
pub struct DirFiles(pub std::path::PathBuf);

#[cfg(not(target_arch = "wasm32"))]
impl ModelFiles for DirFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let full = self.0.join(path);
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(format!("cannot read {}: {e}", full.display()))),
        }
    }

    fn describe(&self, path: &str) -> String {
        self.0.join(path).display().to_string()
    }
}
