//! On-disk records of the Raft log: `cairn-storage`'s framing
//! (`crc32(key ‖ payload)`, then the payload) around a bincode payload
//! (varint integers, trailing bytes rejected).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use cairn_storage::record::{seal_in_place, unseal, CRC_LEN};
use cairn_storage::StorageError;

use crate::error::LogStoreError;

fn codec() -> impl Options {
    // Varint, little-endian, no size limit (the checksum is verified before
    // decoding, so lengths come from data this store wrote), trailing bytes
    // rejected.
    bincode::DefaultOptions::new()
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
    seal_in_place(key, &mut out);
    Ok(out)
}

/// Verifies and deserializes a value read under `key`.
pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, LogStoreError> {
    let payload = unseal(key, value).map_err(|e| match e {
        StorageError::Corruption(msg) => LogStoreError::Corruption(msg),
        other => LogStoreError::Corruption(other.to_string()),
    })?;
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
