//! Model ids: where a converted model (a folder with `manifest.json`, made by
//! `sd-weights convert`) is fetched from.
//!
//! A model id is a URL (absolute, or relative to the page), or `hf:user/repo[@revision][/folder]`
//! for a model uploaded to the Hugging Face Hub, which resolves to the Hub's file URLs
//! (`https://huggingface.co/{user}/{repo}/resolve/{revision}/{folder}`, as `huggingface_hub`'s
//! `hf_hub_url` builds them; `revision` defaults to `main`; a revision with a `/`, such as
//! `refs/pr/1`, is written encoded, `refs%2Fpr%2F1`, as `hf_hub_url` sends it). The Hub serves
//! files with CORS headers, so any page can load from it. `local:NAME` is a model imported into
//! this browser's storage from the user's own files ([`LOCAL`]).

use crate::Error;

/// The prefix of a model imported into this browser from the user's files (`local:NAME`, see
/// `importFile`): it lives only in this browser's storage and is never fetched.
pub const LOCAL: &str = "local:";

/// Whether a resolved model URL names an imported model ([`LOCAL`]).
pub fn is_local(url: &str) -> bool {
    url.starts_with(LOCAL)
}

/// The Hub's address for file downloads.
const HF_ENDPOINT: &str = "https://huggingface.co";

const HF_FORM: &str = "hf:user/repo[@revision][/folder]";

/// A model id resolved: the folder URL to fetch from, and the model's name for the A1111
/// parameters text (`Model: …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSource {
    /// The folder holding `manifest.json`, without a trailing slash.
    pub url: String,
    /// The last part of the folder's path (`models/shapes` → `shapes`); for a Hub id its
    /// folder's last part, else the repository's name. `None` when the URL has no path.
    pub name: Option<String>,
}

/// Resolves a model id (see the module docs). Errors: [`Error::BadInput`] for an empty id or a
/// malformed `hf:` id, saying the form it takes.
pub fn resolve(id: &str) -> Result<ModelSource, Error> {
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::BadInput(format!(
            "the model is empty: give the URL of a converted model's folder or {HF_FORM}"
        )));
    }
    if let Some(name) = id.strip_prefix(LOCAL) {
        if name.trim().is_empty() {
            return Err(Error::BadInput(format!(
                "model \"{id}\": an imported model's id is {LOCAL}NAME"
            )));
        }
        return Ok(ModelSource {
            url: id.to_string(),
            name: Some(name.to_string()),
        });
    }
    let Some(hub) = id.strip_prefix("hf:") else {
        let url = id.trim_end_matches('/').to_string();
        let name = last_part(&url);
        return Ok(ModelSource { url, name });
    };
    let bad = |why: &str| Error::BadInput(format!("model \"{id}\": {why}; the form is {HF_FORM}"));
    let mut parts = hub.trim_end_matches('/').splitn(3, '/');
    let (user, repo) = match (parts.next(), parts.next()) {
        (Some(user), Some(repo)) => (user, repo),
        _ => return Err(bad("a user and a repository are needed")),
    };
    let folder = parts.next().unwrap_or("");
    let (repo, revision) = match repo.split_once('@') {
        Some((repo, revision)) => (repo, revision),
        None => (repo, "main"),
    };
    if !is_hub_name(user) || !is_hub_name(repo) {
        return Err(bad(
            "user and repository names take letters, digits, '-', '_' and '.'",
        ));
    }
    // The first '/' after the repository starts the folder, so a revision's own '/' comes
    // encoded (%2F), as hf_hub_url sends it.
    let revision_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '%');
    if revision.is_empty() || !revision.chars().all(revision_char) {
        return Err(bad(
            "the revision is a branch, tag or commit of letters, digits, '-', '_', '.' \
             (a '/' in it written %2F)",
        ));
    }
    // No '%' or backslash either: a URL parser would turn %2e%2e into "..", a backslash into '/'.
    let plain =
        |p: &str| !p.is_empty() && p != "." && p != ".." && !p.contains(['?', '#', '%', '\\']);
    if !folder.is_empty() && !folder.split('/').all(plain) {
        return Err(bad("the folder must be a plain path inside the repository"));
    }
    let mut url = format!("{HF_ENDPOINT}/{user}/{repo}/resolve/{revision}");
    if !folder.is_empty() {
        url = format!("{url}/{folder}");
    }
    let name = last_part(folder).or_else(|| Some(repo.to_string()));
    Ok(ModelSource { url, name })
}

/// The Hub's rule for user and repository names (`huggingface_hub`'s `validate_repo_id`:
/// letters, digits, `-`, `_`, `.`; not starting or ending with `-` or `.`).
fn is_hub_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 96
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// The last non-empty part of a path or URL's path (`models/shapes/` → `shapes`).
fn last_part(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let after_host = match path.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => path,
    };
    after_host
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty() && *name != "." && *name != "..")
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str) -> (String, Option<String>) {
        let s = resolve(id).unwrap();
        (s.url, s.name)
    }

    #[test]
    fn urls_pass_through_without_their_trailing_slash() {
        assert_eq!(
            source("models/shapes/"),
            ("models/shapes".into(), Some("shapes".into()))
        );
        assert_eq!(
            source("https://example.com/m/sd15-q8"),
            (
                "https://example.com/m/sd15-q8".into(),
                Some("sd15-q8".into())
            )
        );
        assert_eq!(source("https://example.com/").1, None);
    }

    #[test]
    fn imported_models_keep_their_name() {
        assert_eq!(
            source("local:my model.v2"),
            ("local:my model.v2".into(), Some("my model.v2".into()))
        );
        assert!(is_local(&resolve(" local:x ").unwrap().url));
        assert!(!is_local(&resolve("models/local:x").unwrap().url));
        assert!(resolve("local: ").is_err());
    }

    #[test]
    fn hub_ids_resolve_as_hf_hub_url_does() {
        assert_eq!(
            source("hf:user/sd15-webgpu"),
            (
                "https://huggingface.co/user/sd15-webgpu/resolve/main".into(),
                Some("sd15-webgpu".into())
            )
        );
        assert_eq!(
            source("hf:user/sd15-webgpu@v1.0/q8"),
            (
                "https://huggingface.co/user/sd15-webgpu/resolve/v1.0/q8".into(),
                Some("q8".into())
            )
        );
        assert_eq!(
            source("hf:user/repo/models/q4/").0,
            "https://huggingface.co/user/repo/resolve/main/models/q4"
        );
        // A revision with a '/' comes encoded; the first '/' after the repository is a folder.
        assert_eq!(
            source("hf:user/repo@refs%2Fpr%2F1/q8"),
            (
                "https://huggingface.co/user/repo/resolve/refs%2Fpr%2F1/q8".into(),
                Some("q8".into())
            )
        );
        assert_eq!(
            source("hf:user/repo@feature/x").0,
            "https://huggingface.co/user/repo/resolve/feature/x"
        );
    }

    #[test]
    fn bad_ids_say_the_form() {
        for id in [
            "",
            "hf:",
            "hf:user",
            "hf:user/",
            "hf:us er/repo",
            "hf:user/-repo",
            "hf:user/repo@",
            "hf:user/repo/../x",
            "hf:user/repo//x",
            "hf:user/repo@a?b",
            "hf:user/repo/%2e%2e/%2e%2e/evil",
            "hf:user/repo/a\\..\\b",
        ] {
            let e = resolve(id).unwrap_err().to_string();
            assert!(
                e.contains("hf:user/repo[@revision][/folder]"),
                "{id:?}: {e}"
            );
        }
    }
}
