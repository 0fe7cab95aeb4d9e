use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::*;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// RFC 8291 §5 (example) and Appendix A (its intermediate values).
mod rfc8291 {
    pub const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    pub const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
    pub const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    pub const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    pub const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    pub const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    pub const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    pub const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    pub const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
}

fn secret(s: &str) -> p256::SecretKey {
    p256::SecretKey::from_slice(&b64(s)).expect("P-256 private key")
}

#[test]
fn sealing_reproduces_the_rfc8291_example_byte_for_byte() {
    let ua = UaKeys::decode(rfc8291::UA_PUBLIC, rfc8291::AUTH).expect("RFC keys");
    let as_private = secret(rfc8291::AS_PRIVATE);
    let as_public: Point = b64(rfc8291::AS_PUBLIC).try_into().expect("65 bytes");
    assert_eq!(
        as_private.public_key().to_encoded_point(false).as_bytes(),
        as_public
    );
    // The sender's side of the agreement, which ring cannot be given a fixed key for.
    let ua_point = p256::PublicKey::from_sec1_bytes(&ua.p256dh).expect("point");
    let shared = p256::ecdh::diffie_hellman(as_private.to_nonzero_scalar(), ua_point.as_affine());
    assert_eq!(
        shared.raw_secret_bytes().as_slice(),
        b64(rfc8291::ECDH_SECRET)
    );
    let salt: [u8; 16] = b64(rfc8291::SALT).try_into().expect("16 bytes");

    let body = seal(
        shared.raw_secret_bytes(),
        &ua,
        &as_public,
        &salt,
        rfc8291::PLAINTEXT,
    )
    .expect("seals");
    assert_eq!(URL_SAFE_NO_PAD.encode(&body), rfc8291::BODY);
    assert_eq!(body.len(), rfc8291::PLAINTEXT.len() + ENCRYPTION_OVERHEAD);
}

#[test]
fn ring_path_decrypts_for_the_user_agent() {
    let sub = testkit::webpush::Subscription::generate();
    let ua = UaKeys::decode(&sub.p256dh(), &sub.auth()).expect("browser keys");
    let plaintext = br#"{"notification":{"event_id":"$e"}}"#.to_vec();

    let a = ua.encrypt(plaintext.clone()).expect("encrypts");
    let b = ua.encrypt(plaintext.clone()).expect("encrypts");
    for body in [&a, &b] {
        assert_eq!(sub.decrypt(body), Ok(plaintext.clone()));
        assert_eq!(body.len(), plaintext.len() + ENCRYPTION_OVERHEAD);
        assert_eq!(body[16..21], [0, 0, 0x10, 0, 65], "rs 4096, 65-byte key id");
        assert_eq!(body[21], 4, "key id is an uncompressed point");
    }
    // A new salt and sender key for every message (RFC 8291 §3.1).
    assert_ne!(a[..16], b[..16]);
    assert_ne!(a[21..86], b[21..86]);

    let other = testkit::webpush::Subscription::generate();
    assert!(other.decrypt(&a).is_err());
}

#[test]
fn a_record_larger_than_4096_gets_a_larger_record_size() {
    let sub = testkit::webpush::Subscription::generate();
    let ua = UaKeys::decode(&sub.p256dh(), &sub.auth()).expect("browser keys");
    let plaintext = vec![b'x'; 4079];
    let body = ua.encrypt(plaintext.clone()).expect("encrypts");
    assert_eq!(body[16..20], 4097u32.to_be_bytes());
    assert_eq!(sub.decrypt(&body), Ok(plaintext));
}

#[test]
fn keys_decode_in_every_form_browsers_and_apps_send() {
    let ua_private = secret(rfc8291::UA_PRIVATE);
    let auth: [u8; 16] = b64(rfc8291::AUTH).try_into().expect("16 bytes");
    let compressed = ua_private.public_key().to_encoded_point(true);
    let padded_standard = STANDARD.encode(compressed.as_bytes());
    let ua = UaKeys::decode(&padded_standard, &format!("{}==", STANDARD.encode(auth)))
        .expect("compressed point, standard base64 with padding");
    assert_eq!(ua.p256dh.as_slice(), b64(rfc8291::UA_PUBLIC));
    let body = ua.encrypt(rfc8291::PLAINTEXT.to_vec()).expect("encrypts");
    assert_eq!(
        testkit::webpush::ece::decrypt(&body, &ua_private, &auth),
        Ok(rfc8291::PLAINTEXT.to_vec())
    );

    let mut off_curve = b64(rfc8291::UA_PUBLIC);
    off_curve[64] ^= 1;
    assert!(UaKeys::decode(&URL_SAFE_NO_PAD.encode(off_curve), rfc8291::AUTH).is_none());
    assert!(UaKeys::decode(rfc8291::UA_PUBLIC, &URL_SAFE_NO_PAD.encode([0u8; 15])).is_none());
    assert!(UaKeys::decode(rfc8291::UA_PUBLIC, "not base64!").is_none());
}
