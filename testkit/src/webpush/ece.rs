//! RFC 8291 message decryption (RFC 8188 `aes128gcm`, one record), written
//! from the RFCs for the fake: it shares no code with the gateway's encryption.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// salt (16) + record size (4) + key id length (1) + key id (65-byte P-256 point).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;

/// Decrypts `body` for the user agent holding `ua_secret` and `auth`.
pub fn decrypt(body: &[u8], ua_secret: &SecretKey, auth: &[u8; 16]) -> Result<Vec<u8>, String> {
    if body.len() < HEADER_LEN + 16 {
        return Err(format!(
            "body of {} bytes is shorter than an aes128gcm header and tag",
            body.len()
        ));
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let idlen = body[20] as usize;
    if idlen != 65 {
        return Err(format!("key id length is {idlen}, RFC 8291 requires 65"));
    }
    let as_public = PublicKey::from_sec1_bytes(&body[21..HEADER_LEN])
        .map_err(|_| "key id is not a P-256 public key".to_owned())?;
    let ciphertext = &body[HEADER_LEN..];
    if ciphertext.len() > rs {
        return Err(format!(
            "{} bytes of ciphertext exceed the record size {rs}: more than one record",
            ciphertext.len()
        ));
    }

    // RFC 8291 §3.3–3.4: combine the ECDH secret with the auth secret.
    let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_public.as_affine());
    let ua_public = ua_secret.public_key().to_encoded_point(false);
    let as_point = as_public.to_encoded_point(false);
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public.as_bytes());
    key_info.extend_from_slice(as_point.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|e| e.to_string())?;

    // RFC 8188 §2.2–2.3: content-encryption key and nonce (sequence number 0).
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|e| e.to_string())?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|e| e.to_string())?;
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|e| e.to_string())?;
    let mut padded = cipher
        .decrypt(Nonce::from_slice(&nonce), ciphertext)
        .map_err(|_| "authentication failed: wrong keys or corrupted record".to_owned())?;

    // The last record ends with the delimiter 0x02 followed by zero padding.
    while padded.last() == Some(&0) {
        padded.pop();
    }
    match padded.pop() {
        Some(2) => Ok(padded),
        Some(d) => Err(format!(
            "padding delimiter is {d:#04x}, expected 0x02 (last record)"
        )),
        None => Err("record has no padding delimiter".into()),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("base64url")
    }

    /// RFC 8291 Appendix A.
    #[test]
    fn rfc8291_test_vector() {
        let body = b64("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN");
        let ua_private =
            p256::SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
                .expect("key");
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().expect("16 bytes");
        let plain = super::decrypt(&body, &ua_private, &auth).expect("decrypts");
        assert_eq!(plain, b"When I grow up, I want to be a watermelon");

        let mut tampered = body.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(super::decrypt(&tampered, &ua_private, &auth).is_err());
        let wrong_auth = [0u8; 16];
        assert!(super::decrypt(&body, &ua_private, &wrong_auth).is_err());
    }
}
