//! URL-safe base64 without padding, for the two fixed sizes baton uses (a token's 20
//! bytes in 27 characters, a client id's 12 in 16), in constant time and fast.
//!
//! Each character is mapped with branch-free wrapping arithmetic (no table lookups, so
//! no secret-dependent memory access) in a loop the compiler vectorises, then bits
//! are packed eight to a 64-bit word. It replaced `base64ct` on the hot path, which costs
//! about 30 instructions a character; the tests check both agree on every input shape.

/// Characters are mapped in blocks of this many, a whole number of vector registers
/// and at least the longest text (27): a fixed, round count vectorises without a
/// scalar tail.
const LANES: usize = 32;

/// `0xFF` if `lo <= c <= hi`, else `0`, without branches and in byte arithmetic
/// only, so a loop of it vectorises one byte per lane.
#[inline(always)]
fn in_range(c: u8, lo: u8, hi: u8) -> u8 {
    let d = c.wrapping_sub(lo);
    let n = hi - lo + 1;
    // d < n exactly when d - n borrows; the borrow out of bit 7, without a wider type
    // (Hacker's Delight 2-12): the top bit of (!d & n) | (!(d ^ n) & (d - n)).
    let borrow = (!d & n) | (!(d ^ n) & d.wrapping_sub(n));
    ((borrow as i8) >> 7) as u8
}

/// The 6-bit value of an alphabet character, and `0xFF` in the second place if `c`
/// is not in the alphabet.
#[inline(always)]
fn sextet(c: u8) -> (u8, u8) {
    let upper = in_range(c, b'A', b'Z');
    let lower = in_range(c, b'a', b'z');
    let digit = in_range(c, b'0', b'9');
    let dash = in_range(c, b'-', b'-');
    let under = in_range(c, b'_', b'_');
    let v = (upper & c.wrapping_sub(b'A'))
        | (lower & c.wrapping_sub(b'a' - 26))
        | (digit & c.wrapping_add(52 - b'0'))
        | (dash & 62)
        | (under & 63);
    (v, !(upper | lower | digit | dash | under))
}

/// The alphabet character of a 6-bit value, without branches.
#[inline(always)]
fn ascii(v: u8) -> u8 {
    // `k.wrapping_sub(v) >> 7` is 1 exactly when v > k (for v < 64); negated, a mask.
    let over = |k: u8| 0u8.wrapping_sub(k.wrapping_sub(v) >> 7);
    // Start at 'A' + v, then shift each later range onto its characters:
    // 26 -> 'a' (+6), 52 -> '0' (-75), 62 -> '-' (-13), 63 -> '_' (+49).
    v.wrapping_add(b'A')
        .wrapping_add(over(25) & 6)
        .wrapping_sub(over(51) & 75)
        .wrapping_sub(over(61) & 13)
        .wrapping_add(over(62) & 49)
}

/// Six bytes, as the low 48 bits of a big-endian word, spread into eight 6-bit values,
/// one per byte, first value in the lowest byte. Three halvings (48 bits into two
/// 24-bit lanes, each into two 12-bit lanes, each into two 6-bit lanes) do in a dozen
/// word operations what a loop does in fifty byte operations.
#[inline(always)]
fn spread(v: u64) -> u64 {
    let w = (v & 0xFF_FFFF) | ((v >> 24) & 0xFF_FFFF) << 32;
    let w = (w & 0x0000_0FFF_0000_0FFF) | ((w >> 12) & 0x0000_0FFF_0000_0FFF) << 16;
    let w = (w & 0x003F_003F_003F_003F) | ((w >> 6) & 0x003F_003F_003F_003F) << 8;
    // The halvings leave the last value lowest.
    w.swap_bytes()
}

/// The inverse of `spread` for values below 64.
#[inline(always)]
fn gather(u: u64) -> u64 {
    let w = u.swap_bytes();
    let w = (w & 0x003F_003F_003F_003F) | ((w >> 8) & 0x003F_003F_003F_003F) << 6;
    let w = (w & 0x0000_0FFF_0000_0FFF) | ((w >> 16) & 0x0000_0FFF_0000_0FFF) << 12;
    (w & 0xFF_FFFF) | ((w >> 32) & 0xFF_FFFF) << 24
}

/// Bytes in chunks of six, characters in chunks of eight.
const CHUNKS: usize = LANES / 8;

/// The lanes a text of `c` characters needs: 16 for a client id, 32 for a token (a
/// constant once `c` is).
#[inline(always)]
const fn used_lanes(c: usize) -> usize {
    c.next_multiple_of(16)
}

/// Decodes `C` characters into `B` bytes; `None` unless every character is in the
/// alphabet and the unused low bits of the last one are zero (one text per value).
#[inline]
pub(crate) fn decode<const C: usize, const B: usize>(text: &[u8]) -> Option<[u8; B]> {
    const { assert!(C <= LANES && B == C * 3 / 4 && C % 4 != 1) };
    let text: &[u8; C] = text.try_into().ok()?;
    // Padding with 'A' (value 0) makes the bits past the last character zero.
    let mut padded = [b'A'; LANES];
    padded[..C].copy_from_slice(text);
    let lanes = used_lanes(C);
    let mut six = [0u8; LANES];
    let mut invalid = [0u8; LANES];
    for ((s, i), c) in six[..lanes]
        .iter_mut()
        .zip(invalid[..lanes].iter_mut())
        .zip(&padded[..lanes])
    {
        (*s, *i) = sextet(*c);
    }
    let bad = invalid.iter().fold(0, |a, b| a | b);
    // Each chunk's six bytes are written as one eight-byte word whose last two
    // (zero) bytes the next chunk overwrites.
    let mut bytes = [0u8; 6 * CHUNKS + 2];
    for (k, chunk) in six[..lanes].chunks_exact(8).enumerate() {
        let v = gather(u64::from_le_bytes(chunk.try_into().expect("8 values")));
        bytes[6 * k..6 * k + 8].copy_from_slice(&(v << 16).to_be_bytes());
    }
    // The bits past the `B` bytes come from the last character's spare low bits and
    // from padding: zero exactly when the text is canonical.
    let spare = bytes[B..].iter().fold(0, |a, b| a | b);
    let mut out = [0u8; B];
    out.copy_from_slice(&bytes[..B]);
    (bad | spare == 0).then_some(out)
}

/// Encodes `B` bytes as `C` characters.
#[inline]
pub(crate) fn encode<const B: usize, const C: usize>(bytes: &[u8; B]) -> [u8; C] {
    const { assert!(C <= LANES && B == C * 3 / 4 && C % 4 != 1) };
    // Zero bytes past the end give the last character its zero spare bits.
    let mut padded = [0u8; 6 * CHUNKS];
    padded[..B].copy_from_slice(bytes);
    let lanes = used_lanes(C);
    let mut six = [0u8; LANES];
    for (k, chunk) in six[..lanes].chunks_exact_mut(8).enumerate() {
        let mut word = [0u8; 8];
        word[2..].copy_from_slice(&padded[6 * k..6 * k + 6]);
        chunk.copy_from_slice(&spread(u64::from_be_bytes(word)).to_le_bytes());
    }
    let mut text = [0u8; LANES];
    for (t, s) in text[..lanes].iter_mut().zip(six) {
        *t = ascii(s);
    }
    let mut out = [0u8; C];
    out.copy_from_slice(&text[..C]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64ct::{Base64UrlUnpadded, Encoding};

    #[test]
    fn every_character_maps_like_the_reference() {
        for c in 0..=255u8 {
            let mut reference = [0u8; 3];
            let text = [b'A', c, b'A', b'A'];
            let expected = Base64UrlUnpadded::decode(text, &mut reference).is_ok();
            let (v, bad) = sextet(c);
            assert_eq!(bad == 0, expected, "char {c}");
            if expected {
                assert_eq!(ascii(v), c, "char {c}");
            }
        }
        for v in 0..64u8 {
            assert_eq!(sextet(ascii(v)), (v, 0));
        }
    }

    #[test]
    fn agrees_with_base64ct_on_tokens_and_clients() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut token = [0u8; 20];
            let mut client = [0u8; 12];
            for b in token.iter_mut().chain(client.iter_mut()) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let t: [u8; 27] = encode(&token);
            let mut r = [0u8; 27];
            assert_eq!(
                &t,
                Base64UrlUnpadded::encode(&token, &mut r)
                    .unwrap()
                    .as_bytes()
            );
            assert_eq!(decode::<27, 20>(&t), Some(token));
            let c: [u8; 16] = encode(&client);
            let mut r = [0u8; 16];
            assert_eq!(
                &c,
                Base64UrlUnpadded::encode(&client, &mut r)
                    .unwrap()
                    .as_bytes()
            );
            assert_eq!(decode::<16, 12>(&c), Some(client));
        }
    }

    #[test]
    fn refuses_what_the_reference_refuses() {
        let mut x = 12345u64;
        for _ in 0..50_000 {
            let mut text = [0u8; 27];
            for b in text.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly alphabet characters, so some texts are valid.
                *b = if x.is_multiple_of(17) {
                    x as u8 >> 1
                } else {
                    ascii((x >> 8) as u8 & 63)
                };
            }
            let mut r = [0u8; 20];
            let reference = Base64UrlUnpadded::decode(text, &mut r)
                .ok()
                .map(|b| b.to_vec());
            assert_eq!(
                decode::<27, 20>(&text).map(|b| b.to_vec()),
                reference,
                "{text:?}"
            );
        }
        assert_eq!(decode::<27, 20>(b"short"), None);
    }
}
