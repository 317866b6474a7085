//! The ChaCha20 block function, one 64-byte block at a time.
//!
//! `rand_chacha` computes four blocks per call (its buffer), but verifying a token and
//! minting its successor needs one block, rarely two: computing exactly those cuts
//! the rotate path's largest cost by about two thirds. The keystream is bit-for-bit
//! `rand_chacha::ChaCha20Rng`'s (same key, stream and position); the tests check that.
//!
//! The state is four rows of four words, so each step of a quarter-round is one
//! element-wise operation on a row, which the compiler turns into SSE2/NEON vector
//! instructions without any `unsafe`.

type Row = [u32; 4];

#[inline(always)]
fn add(a: &mut Row, b: &Row) {
    for i in 0..4 {
        a[i] = a[i].wrapping_add(b[i]);
    }
}

#[inline(always)]
fn xor_rotate(d: &mut Row, a: &Row, n: u32) {
    for i in 0..4 {
        d[i] = (d[i] ^ a[i]).rotate_left(n);
    }
}

/// All four quarter-rounds of a column (or, after `diagonalize`, a diagonal) round.
#[inline(always)]
fn quarter_rounds(a: &mut Row, b: &mut Row, c: &mut Row, d: &mut Row) {
    add(a, b);
    xor_rotate(d, a, 16);
    add(c, d);
    xor_rotate(b, c, 12);
    add(a, b);
    xor_rotate(d, a, 8);
    add(c, d);
    xor_rotate(b, c, 7);
}

/// Keystream block `counter` of `stream` under `key` (the original ChaCha layout:
/// 64-bit block counter in words 12-13, 64-bit nonce in words 14-15).
#[inline]
pub(crate) fn block(key: &[u32; 8], stream: u64, counter: u64) -> [u8; 64] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline: every CPU this code can run on
        // has it, which is all `#[target_feature(enable = "sse2")]` requires.
        unsafe { sse2::block(key, stream, counter) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block_portable(key, stream, counter)
    }
}

/// The same block with SSE2 (part of every x86_64 CPU, so no run-time detection):
/// one row per register, a lane shuffle to reach the diagonals. The
/// portable version compiles to scalar code with register spills, about three times
/// the instructions.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_or_si128, _mm_set_epi32, _mm_shuffle_epi32,
        _mm_slli_epi32, _mm_srli_epi32, _mm_xor_si128,
    };

    #[target_feature(enable = "sse2")]
    fn rotl<const L: i32, const R: i32>(x: __m128i) -> __m128i {
        _mm_or_si128(_mm_slli_epi32::<L>(x), _mm_srli_epi32::<R>(x))
    }

    #[target_feature(enable = "sse2")]
    fn quarter_rounds(a: &mut __m128i, b: &mut __m128i, c: &mut __m128i, d: &mut __m128i) {
        *a = _mm_add_epi32(*a, *b);
        *d = rotl::<16, 16>(_mm_xor_si128(*d, *a));
        *c = _mm_add_epi32(*c, *d);
        *b = rotl::<12, 20>(_mm_xor_si128(*b, *c));
        *a = _mm_add_epi32(*a, *b);
        *d = rotl::<8, 24>(_mm_xor_si128(*d, *a));
        *c = _mm_add_epi32(*c, *d);
        *b = rotl::<7, 25>(_mm_xor_si128(*b, *c));
    }

    #[target_feature(enable = "sse2")]
    fn row(w: [u32; 4]) -> __m128i {
        _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32)
    }

    #[target_feature(enable = "sse2")]
    fn lanes(x: __m128i) -> [u32; 4] {
        [
            _mm_cvtsi128_si32(x) as u32,
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0x39>(x)) as u32,
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0x4e>(x)) as u32,
            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0x93>(x)) as u32,
        ]
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn block(key: &[u32; 8], stream: u64, counter: u64) -> [u8; 64] {
        let init = [
            row([0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]),
            row([key[0], key[1], key[2], key[3]]),
            row([key[4], key[5], key[6], key[7]]),
            row([
                counter as u32,
                (counter >> 32) as u32,
                stream as u32,
                (stream >> 32) as u32,
            ]),
        ];
        let [mut a, mut b, mut c, mut d] = init;
        for _ in 0..10 {
            quarter_rounds(&mut a, &mut b, &mut c, &mut d);
            // Lanes [1,2,3,0], [2,3,0,1], [3,0,1,2]: the diagonals become columns.
            b = _mm_shuffle_epi32::<0x39>(b);
            c = _mm_shuffle_epi32::<0x4e>(c);
            d = _mm_shuffle_epi32::<0x93>(d);
            quarter_rounds(&mut a, &mut b, &mut c, &mut d);
            b = _mm_shuffle_epi32::<0x93>(b);
            c = _mm_shuffle_epi32::<0x4e>(c);
            d = _mm_shuffle_epi32::<0x39>(d);
        }
        let mut out = [0u8; 64];
        for (r, (x, first)) in [a, b, c, d].into_iter().zip(init).enumerate() {
            for (i, w) in lanes(_mm_add_epi32(x, first)).into_iter().enumerate() {
                out[16 * r + 4 * i..16 * r + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }
}

/// Keystream block `counter` of `stream` under `key` (the original ChaCha layout:
/// 64-bit block counter in words 12-13, 64-bit nonce in words 14-15).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn block_portable(key: &[u32; 8], stream: u64, counter: u64) -> [u8; 64] {
    let init: [Row; 4] = [
        [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574],
        [key[0], key[1], key[2], key[3]],
        [key[4], key[5], key[6], key[7]],
        [
            counter as u32,
            (counter >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
    ];
    let [mut a, mut b, mut c, mut d] = init;
    for _ in 0..10 {
        quarter_rounds(&mut a, &mut b, &mut c, &mut d);
        // Rotate rows so the diagonals line up as columns, and back after. Spelled
        // out, so they compile to lane shuffles (`rotate_left` on a slice does not).
        b = [b[1], b[2], b[3], b[0]];
        c = [c[2], c[3], c[0], c[1]];
        d = [d[3], d[0], d[1], d[2]];
        quarter_rounds(&mut a, &mut b, &mut c, &mut d);
        b = [b[3], b[0], b[1], b[2]];
        c = [c[2], c[3], c[0], c[1]];
        d = [d[1], d[2], d[3], d[0]];
    }
    let mut out = [0u8; 64];
    for (r, (row, first)) in [a, b, c, d].iter().zip(init.iter()).enumerate() {
        for i in 0..4 {
            let w = row[i].wrapping_add(first[i]);
            out[16 * r + 4 * i..16 * r + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// A 32-byte key as the eight little-endian words ChaCha reads.
pub(crate) fn key_words(key: &[u8; 32]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (i, chunk) in key.chunks_exact(4).enumerate() {
        w[i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn portable_and_vector_blocks_agree() {
        let key = key_words(&[0x5a; 32]);
        for (stream, counter) in [(0u64, 0u64), (7, 1 << 40), (u64::MAX, u64::MAX)] {
            assert_eq!(
                block_portable(&key, stream, counter),
                block(&key, stream, counter)
            );
        }
    }

    #[test]
    fn matches_rand_chacha_bit_for_bit() {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let words = key_words(&seed);
        for stream in [0u64, 1, 0xDEAD_BEEF_0000_0001, u64::MAX] {
            for counter in [
                0u64,
                1,
                2,
                3,
                4,
                5,
                1000,
                (1 << 32) - 1,
                1 << 32,
                u64::MAX - 3,
            ] {
                let mut rng = ChaCha20Rng::from_seed(seed);
                rng.set_stream(stream);
                rng.set_word_pos(u128::from(counter) * 16);
                let mut expected = [0u8; 64];
                rng.fill_bytes(&mut expected);
                assert_eq!(
                    block(&words, stream, counter),
                    expected,
                    "stream {stream} block {counter}"
                );
            }
        }
    }

    /// RFC 7539 §2.3.2's block, mapped onto the 64-bit counter / 64-bit nonce layout:
    /// its counter 1 and nonce 00:00:00:09 00:00:00:4a 00:00:00:00 occupy words 12-15.
    #[test]
    fn rfc_7539_block_vector() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let counter = 1u64 | (0x0900_0000u64 << 32);
        let stream = 0x4a00_0000u64;
        let out = block(&key_words(&key), stream, counter);
        assert_eq!(
            &out[..16],
            &[
                0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
                0x71, 0xc4
            ]
        );
        assert_eq!(
            &out[48..],
            &[
                0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50,
                0x3c, 0x4e
            ]
        );
    }
}
