package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// RFC 8291 (Message Encryption for Web Push) over RFC 8188's aes128gcm
// content coding, one record. Only what the RFCs need: ECDH on P-256,
// HKDF-SHA-256 and AES-128-GCM, all from the standard library.
const (
	// RecordSize is the record size written in the header: the whole body
	// must fit one record, and push services accept at most 4096 bytes.
	RecordSize = 4096
	// headerSize is salt (16) + rs (4) + idlen (1) + the sender's key (65).
	headerSize = 16 + 4 + 1 + 65
	tagSize    = 16
	// MaxPlaintext is the largest payload one 4096-byte record carries:
	// 4096 less the header, the GCM tag and the padding delimiter (0x02).
	MaxPlaintext = RecordSize - headerSize - tagSize - 1 // 3993
)

// encrypt encrypts plaintext for a subscription's ua public key (65 bytes,
// uncompressed) and auth secret with a fresh sender key and salt.
func encrypt(plaintext, uaPublic, authSecret []byte) ([]byte, error) {
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var salt [16]byte
	rand.Read(salt[:])
	return encryptWith(plaintext, uaPublic, authSecret, as, salt[:])
}

// encryptWith is encrypt with the sender key and salt given: RFC 8291
// Appendix A's example fixes both.
func encryptWith(plaintext, uaPublic, authSecret []byte, as *ecdh.PrivateKey, salt []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("webpush: plaintext is %d bytes; one record carries at most %d", len(plaintext), MaxPlaintext)
	}
	if len(authSecret) != 16 || len(salt) != 16 {
		return nil, errors.New("webpush: auth secret and salt must be 16 bytes")
	}
	ua, err := ecdh.P256().NewPublicKey(uaPublic)
	if err != nil {
		return nil, fmt.Errorf("webpush: the subscription's p256dh: %w", err)
	}
	ecdhSecret, err := as.ECDH(ua)
	if err != nil {
		return nil, fmt.Errorf("webpush: ECDH: %w", err)
	}
	asPublic := as.PublicKey().Bytes()
	// RFC 8291 §3.3-3.4: the auth secret keys the ECDH secret into the IKM.
	prkKey, err := hkdf.Extract(sha256.New, ecdhSecret, authSecret)
	if err != nil {
		return nil, err
	}
	keyInfo := make([]byte, 0, 14+65+65)
	keyInfo = append(keyInfo, "WebPush: info\x00"...)
	keyInfo = append(keyInfo, uaPublic...)
	keyInfo = append(keyInfo, asPublic...)
	ikm, err := hkdf.Expand(sha256.New, prkKey, string(keyInfo), 32)
	if err != nil {
		return nil, err
	}
	// RFC 8188 §2.2-2.3.
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerSize, headerSize+len(plaintext)+1+tagSize)
	copy(out, salt)
	binary.BigEndian.PutUint32(out[16:], RecordSize)
	out[20] = byte(len(asPublic))
	copy(out[21:], asPublic)
	// The last (only) record ends with the delimiter 0x02 and no padding.
	rec := append(out[headerSize:], plaintext...)
	rec = append(rec, 0x02)
	return gcm.Seal(out[:headerSize], nonce, rec, nil), nil
}
