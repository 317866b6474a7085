//! The ChaCha20 block function, one 64-byte block at a time.
//!
//! `rand_chacha` computes four blocks per call (its buffer), but verifying a token and
//! minting its successor needs one block, rarely two: computing exactly those cuts
//! the rotate path's largest cost by about two thirds. The keystream is bit-for-bit
//! `rand_chacha::ChaCha20Rng`'s (same key, stream and position); the tests check that.
//!
//! The state is four rows of four words, so each step of a quarter-round is one
//! element-wise operation on a row, which the compiler turns into SSE2/NEON vector
//! instructions without any `unsafe`. The only `unsafe` here is the call, after
//! run-time detection, into the `#[target_feature]` versions in `block` and `blocks2`.

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
#[allow(unsafe_code)] // the dispatch to a `#[target_feature]` function
pub(crate) fn block(key: &[u32; 8], stream: u64, counter: u64) -> [u8; 64] {
    #[cfg(target_arch = "x86_64")]
    {
        match x86::level() {
            // SAFETY (all three): `level` reports an instruction set only when the
            // CPU has it, which is all `#[target_feature]` requires; SSE2 is part of
            // the x86_64 baseline.
            x86::Level::Avx512 => unsafe { x86::avx512::block(key, stream, counter) },
            x86::Level::Ssse3 => unsafe { x86::ssse3::block(key, stream, counter) },
            x86::Level::Sse2 => unsafe { x86::sse2::block(key, stream, counter) },
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block_portable(key, stream, counter)
    }
}

/// Blocks `counter` and `counter + 1` (wrapping) of `stream`, computed together.
///
/// One block is a serial chain of 320 dependent steps that leaves the vector units
/// mostly idle, so a second, interleaved chain costs about a third of a block, not a
/// whole one.
#[inline]
#[allow(unsafe_code)] // the dispatch to a `#[target_feature]` function
pub(crate) fn blocks2(key: &[u32; 8], stream: u64, counter: u64) -> [[u8; 64]; 2] {
    #[cfg(target_arch = "x86_64")]
    {
        match x86::level() {
            // SAFETY: as in `block`.
            x86::Level::Avx512 => unsafe { x86::avx512::blocks2(key, stream, counter) },
            x86::Level::Ssse3 => unsafe { x86::ssse3::blocks2(key, stream, counter) },
            x86::Level::Sse2 => unsafe { x86::sse2::blocks2(key, stream, counter) },
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        [
            block_portable(key, stream, counter),
            block_portable(key, stream, counter.wrapping_add(1)),
        ]
    }
}

/// The block with x86 vector instructions: one row of the state per register, a lane
/// shuffle to reach the diagonals. The instruction sets differ only in how a lane is
/// rotated: SSE2 shifts twice and ORs, SSSE3 moves bytes for the 16- and 8-bit
/// rotations, AVX-512VL has a rotate instruction (`vprold`), which shortens the
/// chain by a quarter. The portable version compiles to scalar code with register
/// spills, about three times the instructions.
#[cfg(target_arch = "x86_64")]
mod x86 {
    #[derive(Clone, Copy)]
    pub(super) enum Level {
        Avx512,
        Ssse3,
        Sse2,
    }

    /// The best instruction set this CPU has (std caches the detection: one load).
    #[inline]
    pub(super) fn level() -> Level {
        // Exactly the features the avx512 module enables: running it on a CPU that
        // lacks either would be undefined behaviour.
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            Level::Avx512
        } else if std::arch::is_x86_feature_detected!("ssse3") {
            Level::Ssse3
        } else {
            Level::Sse2
        }
    }

    /// A module with `block` and `blocks2` for one instruction set, given its
    /// features and its four rotations (of a `__m128i` by 16, 12, 8 and 7 bits).
    macro_rules! vector_chacha {
        ($name:ident, $features:literal, $rot16:expr, $rot12:expr, $rot8:expr, $rot7:expr) => {
            pub(super) mod $name {
                #[allow(unused_imports)]
                use std::arch::x86_64::*;

                #[allow(unused_imports)]
                use super::rotations::*;

                #[target_feature(enable = $features)]
                fn quarter_rounds(
                    a: &mut __m128i,
                    b: &mut __m128i,
                    c: &mut __m128i,
                    d: &mut __m128i,
                ) {
                    *a = _mm_add_epi32(*a, *b);
                    *d = $rot16(_mm_xor_si128(*d, *a));
                    *c = _mm_add_epi32(*c, *d);
                    *b = $rot12(_mm_xor_si128(*b, *c));
                    *a = _mm_add_epi32(*a, *b);
                    *d = $rot8(_mm_xor_si128(*d, *a));
                    *c = _mm_add_epi32(*c, *d);
                    *b = $rot7(_mm_xor_si128(*b, *c));
                }

                /// The four rows of a block's initial state.
                #[target_feature(enable = $features)]
                fn initial(key: &[u32; 8], stream: u64, counter: u64) -> [__m128i; 4] {
                    let row = |w: [u32; 4]| {
                        _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32)
                    };
                    [
                        row([0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]),
                        row([key[0], key[1], key[2], key[3]]),
                        row([key[4], key[5], key[6], key[7]]),
                        row([
                            counter as u32,
                            (counter >> 32) as u32,
                            stream as u32,
                            (stream >> 32) as u32,
                        ]),
                    ]
                }

                /// Lanes [3,0,1,2], [1,2,3,0], [2,3,0,1] of rows a, c, d: the
                /// diagonals become columns. Row b stays: it is the last a round
                /// finishes, so shuffling it would lengthen the chain.
                #[target_feature(enable = $features)]
                fn diagonalize(a: &mut __m128i, c: &mut __m128i, d: &mut __m128i) {
                    *a = _mm_shuffle_epi32::<0x93>(*a);
                    *c = _mm_shuffle_epi32::<0x39>(*c);
                    *d = _mm_shuffle_epi32::<0x4e>(*d);
                }

                #[target_feature(enable = $features)]
                fn undiagonalize(a: &mut __m128i, c: &mut __m128i, d: &mut __m128i) {
                    *a = _mm_shuffle_epi32::<0x39>(*a);
                    *c = _mm_shuffle_epi32::<0x93>(*c);
                    *d = _mm_shuffle_epi32::<0x4e>(*d);
                }

                /// Adds the initial state and serialises, little-endian.
                #[target_feature(enable = $features)]
                fn output(rows: [__m128i; 4], init: [__m128i; 4]) -> [u8; 64] {
                    let mut out = [0u8; 64];
                    for (r, (x, first)) in rows.into_iter().zip(init).enumerate() {
                        let x = _mm_add_epi32(x, first);
                        let lanes = [
                            _mm_cvtsi128_si32(x),
                            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0x39>(x)),
                            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0x4e>(x)),
                            _mm_cvtsi128_si32(_mm_shuffle_epi32::<0x93>(x)),
                        ];
                        for (i, w) in lanes.into_iter().enumerate() {
                            out[16 * r + 4 * i..16 * r + 4 * i + 4]
                                .copy_from_slice(&w.to_le_bytes());
                        }
                    }
                    out
                }

                #[target_feature(enable = $features)]
                pub(in super::super) fn block(
                    key: &[u32; 8],
                    stream: u64,
                    counter: u64,
                ) -> [u8; 64] {
                    let init = initial(key, stream, counter);
                    let [mut a, mut b, mut c, mut d] = init;
                    for _ in 0..10 {
                        quarter_rounds(&mut a, &mut b, &mut c, &mut d);
                        diagonalize(&mut a, &mut c, &mut d);
                        quarter_rounds(&mut a, &mut b, &mut c, &mut d);
                        undiagonalize(&mut a, &mut c, &mut d);
                    }
                    output([a, b, c, d], init)
                }

                /// Two blocks, their steps interleaved so the CPU overlaps the chains.
                #[target_feature(enable = $features)]
                pub(in super::super) fn blocks2(
                    key: &[u32; 8],
                    stream: u64,
                    counter: u64,
                ) -> [[u8; 64]; 2] {
                    let init = initial(key, stream, counter);
                    let init2 = initial(key, stream, counter.wrapping_add(1));
                    let [mut a, mut b, mut c, mut d] = init;
                    let [mut a2, mut b2, mut c2, mut d2] = init2;
                    for _ in 0..10 {
                        quarter_rounds(&mut a, &mut b, &mut c, &mut d);
                        quarter_rounds(&mut a2, &mut b2, &mut c2, &mut d2);
                        diagonalize(&mut a, &mut c, &mut d);
                        diagonalize(&mut a2, &mut c2, &mut d2);
                        quarter_rounds(&mut a, &mut b, &mut c, &mut d);
                        quarter_rounds(&mut a2, &mut b2, &mut c2, &mut d2);
                        undiagonalize(&mut a, &mut c, &mut d);
                        undiagonalize(&mut a2, &mut c2, &mut d2);
                    }
                    [output([a, b, c, d], init), output([a2, b2, c2, d2], init2)]
                }
            }
        };
    }

    /// Lane rotations, each under the instruction set it needs.
    mod rotations {
        use std::arch::x86_64::*;

        /// Rotation left by `L` as two shifts (`R` = 32 - `L`) and an OR.
        #[target_feature(enable = "sse2")]
        pub(super) fn shift_rotate<const L: i32, const R: i32>(x: __m128i) -> __m128i {
            _mm_or_si128(_mm_slli_epi32::<L>(x), _mm_srli_epi32::<R>(x))
        }

        /// Each 32-bit lane's bytes moved up by two: rotation by 16.
        #[target_feature(enable = "ssse3")]
        pub(super) fn ssse3_rot16(x: __m128i) -> __m128i {
            _mm_shuffle_epi8(
                x,
                _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13),
            )
        }

        /// Each 32-bit lane's bytes moved up by one: rotation by 8.
        #[target_feature(enable = "ssse3")]
        pub(super) fn ssse3_rot8(x: __m128i) -> __m128i {
            _mm_shuffle_epi8(
                x,
                _mm_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14),
            )
        }

        /// Rotation left by `N` in one instruction (`vprold`).
        #[target_feature(enable = "avx512f,avx512vl")]
        pub(super) fn avx512_rotate<const N: i32>(x: __m128i) -> __m128i {
            _mm_rol_epi32::<N>(x)
        }
    }

    vector_chacha!(
        sse2,
        "sse2",
        shift_rotate::<16, 16>,
        shift_rotate::<12, 20>,
        shift_rotate::<8, 24>,
        shift_rotate::<7, 25>
    );
    vector_chacha!(
        ssse3,
        "ssse3",
        ssse3_rot16,
        shift_rotate::<12, 20>,
        ssse3_rot8,
        shift_rotate::<7, 25>
    );
    vector_chacha!(
        avx512,
        "avx512f,avx512vl",
        avx512_rotate::<16>,
        avx512_rotate::<12>,
        avx512_rotate::<8>,
        avx512_rotate::<7>
    );
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
#[allow(unsafe_code)] // each instruction set's functions, called directly
mod tests {
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// Every block function this CPU can run, by name.
    #[allow(clippy::type_complexity)]
    fn implementations() -> Vec<(&'static str, fn(&[u32; 8], u64, u64) -> [[u8; 64]; 2])> {
        let mut all: Vec<(&'static str, fn(&[u32; 8], u64, u64) -> [[u8; 64]; 2])> = vec![
            ("dispatched, one at a time", |k, s, c| {
                [block(k, s, c), block(k, s, c.wrapping_add(1))]
            }),
            ("dispatched, two together", blocks2),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (each call): run only when the CPU has the instruction set.
            all.push(("sse2", |k, s, c| unsafe {
                [
                    x86::sse2::block(k, s, c),
                    x86::sse2::block(k, s, c.wrapping_add(1)),
                ]
            }));
            all.push(("sse2 x2", |k, s, c| unsafe { x86::sse2::blocks2(k, s, c) }));
            if std::arch::is_x86_feature_detected!("ssse3") {
                all.push(("ssse3", |k, s, c| unsafe {
                    [
                        x86::ssse3::block(k, s, c),
                        x86::ssse3::block(k, s, c.wrapping_add(1)),
                    ]
                }));
                all.push(("ssse3 x2", |k, s, c| unsafe {
                    x86::ssse3::blocks2(k, s, c)
                }));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                all.push(("avx512", |k, s, c| unsafe {
                    [
                        x86::avx512::block(k, s, c),
                        x86::avx512::block(k, s, c.wrapping_add(1)),
                    ]
                }));
                all.push(("avx512 x2", |k, s, c| unsafe {
                    x86::avx512::blocks2(k, s, c)
                }));
            }
        }
        all
    }

    #[test]
    fn every_implementation_matches_the_portable_one() {
        let key = key_words(&[0x5a; 32]);
        for (name, blocks) in implementations() {
            for (stream, counter) in [
                (0u64, 0u64),
                (7, 1 << 40),
                (9, (1 << 32) - 1),
                (u64::MAX, u64::MAX),
            ] {
                let expected = [
                    block_portable(&key, stream, counter),
                    block_portable(&key, stream, counter.wrapping_add(1)),
                ];
                assert_eq!(
                    blocks(&key, stream, counter),
                    expected,
                    "{name} at {stream}/{counter}"
                );
            }
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
