//! On-disk record framing. Every value Cairn stores (here and in the Raft log)
//! is `crc32(key ‖ payload)` (4 bytes, little-endian) followed by the payload.
//! Covering the key as well catches a record that ended up under the wrong key,
//! not only flipped bits.

use cairn_api::mvccpb::KeyValue;
use prost::Message;

use crate::error::StorageError;
use crate::revision::Revision;

/// Bytes of checksum in front of every payload.
pub const CRC_LEN: usize = 4;

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(payload);
    h.finalize()
}

pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + payload.len());
    out.extend_from_slice(&[0; CRC_LEN]);
    out.extend_from_slice(payload);
    seal_in_place(key, &mut out);
    out
}

/// Fills in the checksum of `record`, laid out as `CRC_LEN` placeholder bytes
/// followed by the payload, so callers can serialize straight into the
/// record without a copy.
pub fn seal_in_place(key: &[u8], record: &mut [u8]) {
    let (crc, payload) = record.split_at_mut(CRC_LEN);
    crc.copy_from_slice(&checksum(key, payload).to_le_bytes());
}

/// Verifies and strips the checksum.
pub fn unseal<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], StorageError> {
    if value.len() < CRC_LEN {
        return Err(StorageError::Corruption(format!(
            "record under key {key:02x?} is {} bytes, shorter than its checksum",
            value.len()
        )));
    }
    let (crc, payload) = value.split_at(CRC_LEN);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let actual = checksum(key, payload);
    if stored != actual {
        return Err(StorageError::Corruption(format!(
            "checksum mismatch under key {key:02x?}: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(payload)
}

/// Whether an MVCC record creates a version of its key or ends its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Put = 0,
    Tombstone = 1,
}

/// An MVCC record as stored in the `Kv` keyspace under its revision.
#[derive(Clone, Debug, PartialEq)]
pub struct KvRecord {
    pub kind: RecordKind,
    pub kv: KeyValue,
}

impl KvRecord {
    pub fn encode(&self, rev: Revision) -> Vec<u8> {
        let mut payload = Vec::with_capacity(1 + self.kv.encoded_len());
        payload.push(self.kind as u8);
        self.kv.encode(&mut payload).expect("Vec grows as needed");
        seal(&rev.to_key(), &payload)
    }

    pub fn decode(rev_key: &[u8], value: &[u8]) -> Result<Self, StorageError> {
        let payload = unseal(rev_key, value)?;
        let (kind, body) = payload
            .split_first()
            .ok_or_else(|| StorageError::Corruption(format!("empty record under {rev_key:02x?}")))?;
        let kind = match kind {
            0 => RecordKind::Put,
            1 => RecordKind::Tombstone,
            k => {
                return Err(StorageError::Corruption(format!(
                    "unknown record kind {k} under {rev_key:02x?}"
                )))
            }
        };
        let kv = KeyValue::decode(body).map_err(|e| {
            StorageError::Corruption(format!("undecodable record under {rev_key:02x?}: {e}"))
        })?;
        Ok(Self { kind, kv })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_detects_damage() {
        let rev = Revision::new(7, 2);
        let rec = KvRecord {
            kind: RecordKind::Put,
            kv: KeyValue {
                key: b"k".to_vec(),
                create_revision: 5,
                mod_revision: 7,
                version: 2,
                value: b"value".to_vec(),
                lease: 0,
            },
        };
        let bytes = rec.encode(rev);
        assert_eq!(KvRecord::decode(&rev.to_key(), &bytes).unwrap(), rec);

        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(matches!(
                KvRecord::decode(&rev.to_key(), &bad),
                Err(StorageError::Corruption(_))
            ));
        }
        // The same bytes under another revision are rejected too.
        let other = Revision::new(8, 0);
        assert!(matches!(
            KvRecord::decode(&other.to_key(), &bytes),
            Err(StorageError::Corruption(_))
        ));
        assert!(matches!(KvRecord::decode(&rev.to_key(), &[1, 2]), Err(StorageError::Corruption(_))));
    }
}
