//! The profile's image, built from this build's binaries and the host's files through a tar
//! context (no registry), and reused while their bytes are the same.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bollard::image::BuildImageOptions;
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::backend::BackendError;
use crate::profile::Profile;

/// Builds the profile's image from the given binaries through a tar context, or reuses the
/// image already built from the same bytes. Returns its tag.
pub async fn ensure_image(
    docker: &Docker,
    profile: &Profile,
    bins: &BTreeMap<String, PathBuf>,
    progress: &mut dyn FnMut(&str),
) -> Result<String, BackendError> {
    let dockerfile_path = profile.resolve(&profile.dockerfile);
    let dockerfile = std::fs::read(&dockerfile_path)
        .map_err(|source| BackendError::Io { path: dockerfile_path, source })?;
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![("Dockerfile".into(), dockerfile, 0o644)];
    for name in &profile.binaries {
        let path = bins
            .get(name)
            .ok_or_else(|| BackendError::Command(format!("binary {name} was not built")))?;
        let bytes = std::fs::read(path)
            .map_err(|source| BackendError::Io { path: path.clone(), source })?;
        files.push((name.clone(), bytes, 0o755));
    }
    for f in &profile.host_files {
        let bytes = std::fs::read(&f.from).map_err(|e| {
            let install = f.package.as_ref().map(|p| format!(" (install {p})")).unwrap_or_default();
            BackendError::Command(format!(
                "the {} image needs {}{install}: {e}",
                profile.name,
                f.from.display()
            ))
        })?;
        files.push((f.to.clone(), bytes, 0o755));
    }
    let mut h = Sha256::new();
    for (name, bytes, _) in &files {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let digest: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let tag = format!("{}:{digest}", profile.image_repo);
    if docker.inspect_image(&tag).await.is_ok() {
        progress(&format!("image {tag} is up to date (same binaries), reusing it"));
        return Ok(tag);
    }
    progress(&format!("building image {tag} (FROM scratch, {} files)", files.len()));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .map_err(|source| BackendError::Io { path: name.into(), source })?;
    }
    let context = tar
        .into_inner()
        .map_err(|source| BackendError::Io { path: "build context".into(), source })?;
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".to_owned(),
        t: tag.clone(),
        rm: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bytes::Bytes::from(context)));
    while let Some(item) = stream.next().await {
        let info = item?;
        if let Some(e) = info.error {
            return Err(BackendError::Command(format!("image build failed: {e}")));
        }
        if let Some(s) = info.stream {
            let s = s.trim();
            if s.starts_with("Step ") {
                progress(s);
            }
        }
    }
    Ok(tag)
}
