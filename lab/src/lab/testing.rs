//! A lab in a temporary directory for tests: [`TestLab`] stops the lab's
//! processes first and then removes the directory, even when the test panics.

use std::ops::{Deref, DerefMut};

use anyhow::Result;

use super::{ApiChoice, Lab, LabOptions};

/// A lab under a fresh temporary directory (fields drop in order: lab, then dir).
#[derive(Debug)]
pub struct TestLab {
    pub lab: Lab,
    dir: tempfile::TempDir,
}

impl TestLab {
    /// A lab whose control API is the recording [`super::StubApi`].
    pub fn stub() -> Result<Self> {
        Self::start(|options| options.api = ApiChoice::Stub)
    }

    /// A lab with the simulated Kubernetes API server.
    pub fn simulated() -> Result<Self> {
        Self::start(|options| options.api = ApiChoice::Simulated)
    }

    /// A lab with options adjusted by `configure`.
    pub fn start(configure: impl FnOnce(&mut LabOptions)) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("dr-lab-").tempdir()?;
        let mut options = LabOptions::new(dir.path().join("lab"));
        configure(&mut options);
        let lab = Lab::start(options)?;
        Ok(Self { lab, dir })
    }

    pub fn temp_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}
