//! The one place that knows the wire codec: bincode 2 through serde.
//!
//! Every argument, result and task file goes through [`encode`] and [`decode`], so a later move
//! to another codec touches this file only. Decoding has a size limit and rejects trailing bytes,
//! so a truncated or foreign payload is an error, never a wrong value.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest payload any decode accepts (1 GiB).
pub(crate) const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a value; fails only for types serde cannot describe to bincode (e.g. maps of
/// unknown length).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

/// At most how many bytes bincode counts against its limit per byte it reads: a primitive
/// counts its size (16 for a `u128`) however few bytes its varint takes.
const CLAIMED_PER_BYTE: usize = 16;

/// Decodes `bytes` with a limit of `LIMIT` bytes on what bincode may claim (and allocate).
fn decode_within<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), String> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    bincode::serde::decode_from_slice::<T, _>(bytes, config).map_err(|e| e.to_string())
}

/// Decodes a value that must use every byte of `bytes`.
///
/// bincode allocates a string of the length its prefix claims before reading it, up to its
/// limit: a forged prefix of a few bytes would have it allocate up to [`DECODE_LIMIT`]. The
/// limit is therefore the smallest of a few steps that a value of `bytes.len()` bytes cannot
/// exceed ([`CLAIMED_PER_BYTE`] times its length), so what a decode allocates stays within a
/// small multiple of its input.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let most = bytes.len().saturating_mul(CLAIMED_PER_BYTE);
    let (value, used) = if most <= 1 << 12 {
        decode_within::<T, { 1 << 12 }>(bytes)
    } else if most <= 1 << 16 {
        decode_within::<T, { 1 << 16 }>(bytes)
    } else if most <= 1 << 20 {
        decode_within::<T, { 1 << 20 }>(bytes)
    } else if most <= 1 << 24 {
        decode_within::<T, { 1 << 24 }>(bytes)
    } else if most <= 1 << 28 {
        decode_within::<T, { 1 << 28 }>(bytes)
    } else {
        decode_within::<T, DECODE_LIMIT>(bytes)
    }?;
    if used != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value (read {used} of {})",
            bytes.len() - used,
            bytes.len()
        ));
    }
    Ok(value)
}

/// Joins per-item encodings into the encoding of a `Vec` of those items, without decoding them.
///
/// This is how `submit_ranks` turns the ranks' values into one `Vec<T>`, and how a worker
/// passes all ranks of an upstream task to a downstream argument.
pub(crate) fn join_seq(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = encode(&(items.len() as u64)).expect("a u64 always encodes");
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let bytes = encode(&(7u32, "x".to_string())).unwrap();
        let back: (u32, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode::<(u32, String)>(&longer).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
        let err = decode::<(u32, String)>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn a_forged_length_prefix_is_refused_before_allocating_it() {
        // A string claiming 320 MiB (varint: 252, then a u32) in a 5-byte payload: refused
        // by the limit, not allocated and then found missing (a fuzz finding).
        let forged = [252, 0x00, 0x00, 0x00, 0x14];
        let err = decode::<String>(&forged).unwrap_err();
        assert!(err.contains("Limit"), "{err}");
        let err = decode::<(u32, Vec<String>)>(&[7, 1, 252, 0, 0, 0, 0x14]).unwrap_err();
        assert!(err.contains("Limit"), "{err}");
        // A value that fills its payload with the largest claims per byte still decodes.
        let wide: Vec<u128> = vec![1; 1000];
        assert_eq!(decode::<Vec<u128>>(&encode(&wide).unwrap()).unwrap(), wide);
        let text = "x".repeat(100_000);
        assert_eq!(decode::<String>(&encode(&text).unwrap()).unwrap(), text);
    }

    #[test]
    fn join_seq_equals_vec_encoding() {
        let items: Vec<(u32, f64)> = (0..300).map(|i| (i, i as f64 / 3.0)).collect();
        let parts: Vec<Vec<u8>> = items.iter().map(|i| encode(i).unwrap()).collect();
        assert_eq!(join_seq(&parts), encode(&items).unwrap());
        let back: Vec<(u32, f64)> = decode(&join_seq(&parts)).unwrap();
        assert_eq!(back, items);
    }
}
