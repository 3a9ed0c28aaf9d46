//! On-disk record framing, the same convention as `cairn-storage`: every
//! value is `crc32(key ‖ payload)` (4 bytes, little-endian) followed by the
//! payload. Covering the key catches a record under the wrong key, not only
//! flipped bits. Payloads are bincode (varint integers, trailing bytes
//! rejected).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::LogStoreError;

const CRC_LEN: usize = 4;

fn codec() -> impl Options {
    // Varint, little-endian, no size limit (the checksum is verified before
    // decoding, so lengths come from data this store wrote), trailing bytes
    // rejected.
    bincode::DefaultOptions::new()
}

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// Serializes `value` and frames it for storage under `key`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    key: &[u8],
    value: &T,
) -> Result<Vec<u8>, LogStoreError> {
    let mut out = vec![0u8; CRC_LEN];
    codec()
        .serialize_into(&mut out, value)
        .map_err(|e| LogStoreError::Encode(e.to_string()))?;
    let crc = checksum(key, &out[CRC_LEN..]);
    out[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Verifies the checksum of a value read under `key` and returns its payload.
pub(crate) fn unseal<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], LogStoreError> {
    if value.len() < CRC_LEN {
        return Err(LogStoreError::Corruption(format!(
            "record under key {key:02x?} is {} bytes, shorter than its checksum",
            value.len()
        )));
    }
    let (crc, payload) = value.split_at(CRC_LEN);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let actual = checksum(key, payload);
    if stored != actual {
        return Err(LogStoreError::Corruption(format!(
            "checksum mismatch under key {key:02x?}: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(payload)
}

/// Verifies and deserializes a value read under `key`.
pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, LogStoreError> {
    let payload = unseal(key, value)?;
    codec().deserialize(payload).map_err(|e| {
        LogStoreError::Corruption(format!("undecodable record under key {key:02x?}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        data: Vec<u8>,
    }

    #[test]
    fn roundtrip_and_every_flipped_byte_is_detected() {
        let key = 7u64.to_be_bytes();
        let v = Sample {
            id: 42,
            name: "cairn".into(),
            data: vec![1, 2, 3, 250],
        };
        let bytes = encode(&key, &v).unwrap();
        assert_eq!(decode::<Sample>(&key, &bytes).unwrap(), v);

        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    matches!(
                        decode::<Sample>(&key, &bad),
                        Err(LogStoreError::Corruption(_))
                    ),
                    "flipping bit {bit} of byte {i} went unnoticed"
                );
            }
        }
        // Truncated, extended, or moved to another key: all rejected.
        assert!(decode::<Sample>(&key, &bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Sample>(&key, &longer).is_err());
        assert!(decode::<Sample>(&8u64.to_be_bytes(), &bytes).is_err());
        assert!(decode::<Sample>(&key, &bytes[..3]).is_err());
    }
}
