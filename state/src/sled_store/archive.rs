//! A finished run sealed into one value: its final snapshot and its whole
//! history, compressed together (deflate). One value per finished run is what
//! keeps the store lean: the snapshot and the run-created event share most of
//! their bytes (the step list and its hashes), which one compressed stream
//! stores once.
//!
//! Value: one codec byte ([`DEFLATE`]), then the deflated envelope of
//! [`Sealed`]. The snapshots and history chunks of unfinished runs are
//! packed the same way ([`pack`]); a value that starts with a record
//! envelope's version byte instead is read as it is (layout 1 wrote them so).
//! Refuses: inflating past [`MAX_INFLATED`] (damage, not data).

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::envelope::{decode, encode};

/// The codec byte of a deflated archive.
const DEFLATE: u8 = 0xDF;
/// An archive inflating to more than this is damaged.
const MAX_INFLATED: u64 = 256 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Sealed {
    /// The encoded snapshot, as in the `runs` tree.
    pub snapshot: Vec<u8>,
    /// The sequence number of the first event (0 unless the history was cut).
    pub first: u64,
    /// The encoded events, in sequence order from `first`.
    pub events: Vec<Vec<u8>>,
}

pub(crate) fn seal(sealed: &Sealed) -> Vec<u8> {
    pack(&encode(sealed))
}

pub(crate) fn open(value: &[u8]) -> Result<Sealed, String> {
    decode(&unpack(value)?)
}

/// An encoded record, deflated behind the codec byte.
pub(crate) fn pack(plain: &[u8]) -> Vec<u8> {
    let mut out = flate2::write::DeflateEncoder::new(vec![DEFLATE], flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = out.write_all(plain);
    out.finish().unwrap_or_default()
}

/// A packed value inflated; a plain envelope (as layout 1 wrote) is returned as it is.
pub(crate) fn unpack(value: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match value.split_first() {
        Some((&DEFLATE, body)) => {
            let mut plain = Vec::new();
            flate2::read::DeflateDecoder::new(body)
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut plain)
                .map_err(|e| format!("cannot inflate: {e}"))?;
            if plain.len() as u64 > MAX_INFLATED {
                return Err(format!("inflates past {MAX_INFLATED} bytes"));
            }
            Ok(std::borrow::Cow::Owned(plain))
        }
        _ => Ok(std::borrow::Cow::Borrowed(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_runs_round_trip_and_damage_is_named() {
        let sealed = Sealed { snapshot: vec![2, 1, 2, 3], first: 0, events: vec![vec![2, 9]; 40] };
        let value = seal(&sealed);
        assert!(value.len() < 40 * 2, "repetition compresses: {} bytes", value.len());
        let back = open(&value).unwrap();
        assert_eq!((back.snapshot, back.first, back.events), (sealed.snapshot, sealed.first, sealed.events));
        assert!(open(&[]).is_err());
        let mut damaged = value.clone();
        damaged.truncate(value.len() / 2);
        assert!(open(&damaged).is_err());
    }
}
