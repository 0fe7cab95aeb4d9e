//! Pieces of JSON text written into a byte buffer exactly as serde_json
//! writes them: strings escaped as its serializer escapes them (`"`, `\`
//! and control characters; nothing else, not `/` nor non-ASCII), integers,
//! and a default payload's values through serde_json itself.

use serde_json::Value;

pub(crate) fn number(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

pub(crate) fn value(buf: &mut Vec<u8>, v: &Value) {
    // Into a `Vec` a `Value` always serializes.
    serde_json::to_writer(&mut *buf, v).unwrap_or_default();
}

/// A string known to need no escaping (our keys, loc-keys) as JSON.
pub(crate) fn plain(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

/// How serde_json escapes a byte: `u` for `\u00XX`, the letter of a short
/// escape, or 0 for none.
const ESCAPE: [u8; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of eight bytes is a control character, `"` or `\` (no false
/// negatives: a yes is checked byte by byte).
fn may_need_escape(w: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space
        | zero_byte(w ^ (ONES * u64::from(b'"')))
        | zero_byte(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

/// A JSON string, escaped as serde_json escapes: `"`, `\` and the control
/// characters, the common ones in their short form. Text without any is
/// passed over eight bytes at a time.
pub(crate) fn string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            if !may_need_escape(word) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape = ESCAPE[usize::from(b)];
        if escape != 0 {
            buf.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            if escape == b'u' {
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            } else {
                buf.push(b'\\');
                buf.push(escape);
            }
        }
        i += 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}
