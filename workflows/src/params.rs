//! Reading a workflow's `--param KEY=VALUE` pairs against its declared
//! parameters, with errors that say which parameter and what is expected.

use std::collections::BTreeMap;
use std::str::FromStr;

use dr_orchestrator::{CatalogError, WorkflowInfo};

pub(crate) struct Params<'a> {
    info: &'a WorkflowInfo,
    values: &'a BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    /// Refuses parameters the workflow does not declare.
    pub(crate) fn new(info: &'a WorkflowInfo, values: &'a BTreeMap<String, String>) -> Result<Self, CatalogError> {
        for key in values.keys() {
            if !info.params.iter().any(|p| p.name == key) {
                return Err(CatalogError::UnknownParam {
                    workflow: info.name.to_owned(),
                    param: key.clone(),
                    known: info.params.iter().map(|p| p.name.to_owned()).collect(),
                });
            }
        }
        Ok(Params { info, values })
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .or_else(|| self.info.params.iter().find(|p| p.name == name).and_then(|p| p.default))
    }

    fn bad(&self, name: &str, value: &str, expected: &str) -> CatalogError {
        CatalogError::BadParam {
            workflow: self.info.name.to_owned(),
            param: name.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }

    /// A parsed value within `range`, or its default.
    pub(crate) fn number<T>(&self, name: &str, range: std::ops::RangeInclusive<T>, expected: &str) -> Result<Option<T>, CatalogError>
    where
        T: FromStr + PartialOrd + Copy,
    {
        let Some(raw) = self.raw(name) else { return Ok(None) };
        match raw.trim().parse::<T>() {
            Ok(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(self.bad(name, raw, expected)),
        }
    }

    /// A comma-separated list of numbers within `range` (`2` or `2,4`); empty when not given.
    pub(crate) fn indexes(&self, name: &str, range: std::ops::RangeInclusive<usize>, expected: &str) -> Result<Vec<usize>, CatalogError> {
        let Some(raw) = self.raw(name) else { return Ok(Vec::new()) };
        raw.split(',')
            .map(|item| match item.trim().parse::<usize>() {
                Ok(v) if range.contains(&v) => Ok(v),
                _ => Err(self.bad(name, raw, expected)),
            })
            .collect()
    }

    pub(crate) fn string(&self, name: &str) -> Option<&str> {
        self.raw(name)
    }

    pub(crate) fn parse<T: FromStr<Err = String>>(&self, name: &str) -> Result<Option<T>, CatalogError> {
        let Some(raw) = self.raw(name) else { return Ok(None) };
        raw.parse::<T>().map(Some).map_err(|expected| self.bad(name, raw, &expected))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`); a key given with an empty value counts as set.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, CatalogError> {
        match self.raw(name).map(str::trim) {
            None => Ok(false),
            Some("" | "1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(self.bad(name, other, "true or false")),
        }
    }
}
