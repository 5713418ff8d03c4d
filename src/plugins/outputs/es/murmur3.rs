//! MurmurHash3 x64 128 (Austin Appleby's public-domain algorithm), the hash Fluent Bit's
//! `generate_id` takes of each document, and the id text it makes of it.
//! Fluent Bit: plugins/out_es/murmur3.c, es.c (`es_uuid`)

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// `MurmurHash3_x64_128(data, len, seed)`: the two 64-bit halves `(h1, h2)`.
pub fn x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);
    let blocks = data.chunks_exact(16);
    let tail = blocks.remainder();
    for b in blocks {
        let mut k1 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let mut k2 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let mut k1 = 0u64;
    let mut k2 = 0u64;
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 ^= u64::from(b) << (8 * i);
        } else {
            k2 ^= u64::from(b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// Fluent Bit's `_id` for `generate_id`: the hash (seed 42) read as eight native
/// (little-endian) `uint16_t`s printed `%04x%04x-%04x-%04x-%04x-%04x%04x%04x`.
pub fn es_uuid(doc: &[u8], out: &mut [u8; 36]) {
    let (h1, h2) = x64_128(doc, 42);
    let mut words = [0u16; 8];
    for i in 0..4 {
        words[i] = (h1 >> (16 * i)) as u16;
        words[i + 4] = (h2 >> (16 * i)) as u16;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pos = 0;
    for (i, w) in words.iter().enumerate() {
        if matches!(i, 2..=5) {
            out[pos] = b'-';
            pos += 1;
        }
        for shift in [12, 8, 4, 0] {
            out[pos] = HEX[((w >> shift) & 0xf) as usize];
            pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        // The reference implementation's (SMHasher) outputs for these inputs.
        assert_eq!(x64_128(b"", 0), (0, 0));
        assert_eq!(
            x64_128(b"hello", 0),
            (0xcbd8a7b341bd9b02, 0x5b1e906a48ae1d19)
        );
        assert_eq!(
            x64_128(b"The quick brown fox jumps over the lazy dog", 0),
            (0xe34bbc7bbc071b6c, 0x7a433ca9c49a9347)
        );
        // Fluent Bit's murmur3.c compiled as it is, seed 42 (generate_id's), one block
        // and a tail of one byte.
        assert_eq!(
            x64_128(b"hello", 42),
            (0xc4b8b3c960af6f08, 0x2334b875b0efbc7a)
        );
        assert_eq!(
            x64_128(b"0123456789abcdef0", 42),
            (0x66fb2273f71d63e3, 0xc5a33661978eeeee)
        );
    }

    #[test]
    fn uuid_text_layout() {
        let mut out = [0u8; 36];
        es_uuid(b"x", &mut out);
        let s = std::str::from_utf8(&out).unwrap();
        let parts: Vec<_> = s.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{s}");
    }
}
