//! The user's files as crate/js/import.js describes them: read a range at a time through its
//! `read` function, and planned into a convert [`Input`] by the crate (a single file or a
//! diffusers folder, as `sd-weights convert` plans it from a path).

use std::collections::BTreeMap;

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::Error;
use crate::convert::ldm::{self, Configs};
use crate::convert::{Input, Spec, header_len, input};
use crate::format::REQUIRED_CONFIGS;
use crate::safetensors::{self as st, Header};
use crate::web::get;

/// The biggest config or tokenizer file read whole (CLIP's vocab.json is 1 MB).
const MAX_SMALL_FILE: u64 = 64 << 20;

/// The user's files, as import.js describes them.
pub(super) struct Source {
    files: Vec<(String, u64)>,
    config: Option<Vec<(String, u64)>>,
    read: Function,
    spec: Function,
    /// Told the byte ranges of `files` the converter will read, in the order it reads them,
    /// before it reads any: a source that streams a file in order (import.js, a URL whose
    /// server refuses ranges) keeps what it passes that is wanted later. Optional.
    plan: Option<Function>,
}

fn file_list(list: &JsValue, what: &str) -> Result<Vec<(String, u64)>, Error> {
    let bad = || Error::BadInput(format!("import: {what} must be a list of {{ path, size }}"));
    let list = list.dyn_ref::<Array>().ok_or_else(bad)?;
    list.iter()
        .map(|f| {
            let path = get(&f, "path").as_string().ok_or_else(bad)?;
            let size = get(&f, "size")
                .as_f64()
                .filter(|s| *s >= 0.0)
                .ok_or_else(bad)?;
            Ok((path, size as u64))
        })
        .collect()
}

impl Source {
    pub(super) fn new(source: &JsValue) -> Result<Source, JsValue> {
        let files = file_list(&get(source, "files"), "files")?;
        if files.is_empty() {
            return Err(Error::BadInput(
                "no files given: a .safetensors checkpoint, or the files of a diffusers folder"
                    .into(),
            )
            .into());
        }
        let config = get(source, "config");
        let config = if config.is_undefined() || config.is_null() {
            None
        } else {
            Some(file_list(&config, "config")?)
        };
        let function = |key: &str| {
            get(source, key).dyn_into::<Function>().map_err(|_| {
                Error::BadInput(format!("import: the source's {key} must be a function"))
            })
        };
        let (read, spec) = (function("read")?, function("spec")?);
        let plan = get(source, "plan");
        let plan = if plan.is_undefined() {
            None
        } else {
            Some(function("plan")?)
        };
        Ok(Source {
            files,
            config,
            read,
            spec,
            plan,
        })
    }

    /// One file given, at the top: a single-file checkpoint; else a diffusers folder.
    fn is_single_file(&self) -> bool {
        self.files.len() == 1 && !self.files[0].0.contains('/')
    }

    /// The name a model gets when the caller gives none: the checkpoint's file name without
    /// its extension, or "imported" for a folder (import.js passes the folder's own name).
    pub(super) fn default_name(&self) -> String {
        if self.is_single_file() {
            let name = &self.files[0].0;
            return name
                .rsplit_once('.')
                .map_or(name.as_str(), |(stem, _)| stem)
                .to_string();
        }
        "imported".into()
    }

    fn list(&self, list: &str) -> &[(String, u64)] {
        match (list, &self.config) {
            ("config", Some(config)) => config,
            _ => &self.files,
        }
    }

    /// `len` bytes of file `index` of `list` ("files" or "config") from `start`.
    pub(super) async fn read(
        &self,
        list: &str,
        index: usize,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>, JsValue> {
        let path = &self.list(list)[index].0;
        let args = Array::of4(
            &list.into(),
            &(index as f64).into(),
            &(start as f64).into(),
            &(len as f64).into(),
        );
        let bytes = match self.read.apply(&JsValue::NULL, &args) {
            Ok(p) => JsFuture::from(Promise::from(p)).await,
            Err(e) => Err(e),
        }
        .map_err(|e| {
            let why = get(&e, "message")
                .as_string()
                .unwrap_or_else(|| format!("{e:?}"));
            JsValue::from(Error::Io(format!("cannot read {path}: {why}")))
        })?;
        let bytes = bytes.dyn_into::<Uint8Array>()?;
        if bytes.length() as u64 != len {
            return Err(Error::Io(format!(
                "cannot read {path}: {len} bytes asked from byte {start}, {} came (was the file changed?)",
                bytes.length()
            ))
            .into());
        }
        Ok(bytes.to_vec())
    }

    /// Tells the source's `plan` (if any) the ranges to be read, as `[index in files, start,
    /// length]`, in reading order.
    pub(super) fn plan(&self, ranges: &[(usize, u64, u64)]) -> Result<(), JsValue> {
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        let list: Array = ranges
            .iter()
            .map(|&(index, start, len)| {
                JsValue::from(Array::of3(
                    &(index as f64).into(),
                    &(start as f64).into(),
                    &(len as f64).into(),
                ))
            })
            .collect();
        plan.call1(&JsValue::NULL, &list)?;
        Ok(())
    }

    /// A safetensors file's parsed header, reading only the header.
    async fn header(&self, list: &str, index: usize) -> Result<Header, JsValue> {
        let (path, size) = &self.list(list)[index];
        let first = self.read(list, index, 0, 8.min(*size)).await?;
        let len = header_len(&first, *size, path)?;
        let bytes = self.read(list, index, 0, 8 + len).await?;
        Ok(st::parse_header(&bytes, *size, path)?)
    }

    /// A diffusers folder's configs and tokenizer files, from `list`.
    async fn folder_files(
        &self,
        list: &str,
        what: &str,
    ) -> Result<
        (
            BTreeMap<String, serde_json::Value>,
            BTreeMap<String, Vec<u8>>,
        ),
        JsValue,
    > {
        let files = self.list(list);
        let mut read = BTreeMap::new();
        let wanted = REQUIRED_CONFIGS.iter().map(|p| p.to_string()).chain(
            input::TOKENIZER_FILES
                .iter()
                .map(|n| format!("tokenizer/{n}")),
        );
        for path in wanted {
            let Some(index) = files.iter().position(|(p, _)| *p == path) else {
                continue;
            };
            let size = files[index].1;
            if size > MAX_SMALL_FILE {
                return Err(Error::BadInput(format!(
                    "{what}/{path}: {size} bytes, too big for a config or tokenizer file"
                ))
                .into());
            }
            read.insert(path, self.read(list, index, 0, size).await?);
        }
        Ok(input::folder_files(|p| Ok(read.remove(p)), what)?)
    }

    /// What to convert: the single file or the folder, checked and planned by the crate,
    /// with the index in `files` of each of the input's safetensors files.
    pub(super) async fn input(
        &self,
        v_prediction: Option<bool>,
    ) -> Result<(Input, Vec<usize>), JsValue> {
        if self.is_single_file() {
            return Ok((self.single_file(v_prediction).await?, vec![0]));
        }
        if v_prediction.is_some() || self.config.is_some() {
            return Err(Error::BadInput(
                "a prediction type and configs apply to single-file checkpoints; a diffusers folder has its own configs"
                    .into(),
            )
            .into());
        }
        let what = "the folder";
        let (configs, tokenizer) = self.folder_files("files", what).await?;
        let mut input = Input::diffusers(configs, tokenizer, what)?;
        let mut indices = Vec::new();
        for (component, _) in input::WEIGHT_FILES {
            let path =
                input::weights_path(component, |p| self.files.iter().any(|(f, _)| f == p), what)?;
            let index = self
                .files
                .iter()
                .position(|(f, _)| *f == path)
                .ok_or_else(|| Error::Io(format!("{path} is missing")))?;
            let header = self.header("files", index).await?;
            input.add_diffusers_weights(component, &path, &header)?;
            indices.push(index);
        }
        input.check_unique()?;
        Ok((input, indices))
    }

    async fn single_file(&self, v_prediction: Option<bool>) -> Result<Input, JsValue> {
        let name = &self.files[0].0;
        input::refuse_pickle(name)?;
        input::expect_safetensors(name)?;
        let header = self.header("files", 0).await?;
        let family = ldm::builtin_family(name, &header)?;
        let configs = match &self.config {
            Some(_) => {
                let what = "the config folder";
                let (configs, tokenizer) = self.folder_files("config", what).await?;
                Configs::Folder(configs, tokenizer, what.into())
            }
            None => Configs::Builtin(self.builtin_spec(family).await?),
        };
        Ok(ldm::single_file(name, &header, configs, v_prediction)?)
    }

    /// The built-in spec of `family`, from the files `spec(family)` gives: its configs,
    /// `tensors.txt` and `tokenizer/*`.
    async fn builtin_spec(&self, family: &str) -> Result<Spec, JsValue> {
        let files = self
            .spec
            .call1(&JsValue::NULL, &family.into())
            .map(Promise::from)?;
        let files = JsFuture::from(files).await.map_err(|e| {
            let why = get(&e, "message")
                .as_string()
                .unwrap_or_else(|| format!("{e:?}"));
            JsValue::from(Error::Io(format!(
                "the built-in {family} configs could not be fetched ({why}); connect once, or give the configs of a diffusers folder"
            )))
        })?;
        let mut configs = BTreeMap::new();
        let mut tokenizer = BTreeMap::new();
        let mut tensors = String::new();
        for entry in Object::entries(files.unchecked_ref::<Object>()).iter() {
            let path = Reflect::get(&entry, &0.into())?
                .as_string()
                .unwrap_or_default();
            let bytes = Reflect::get(&entry, &1.into())?
                .dyn_into::<Uint8Array>()?
                .to_vec();
            let as_text = |bytes: Vec<u8>| {
                String::from_utf8(bytes).map_err(|_| {
                    Error::BadConfig(format!("built-in {family} spec, {path}: not UTF-8"))
                })
            };
            if path == "tensors.txt" {
                tensors = as_text(bytes)?;
            } else if path.starts_with("tokenizer/") {
                tokenizer.insert(path, bytes);
            } else {
                configs.insert(path.clone(), as_text(bytes)?);
            }
        }
        Ok(Spec::parse(family, &configs, &tensors, tokenizer)?)
    }
}
